//! The writes of an import, in one transaction: records made from another installation, the
//! map from its objects to them (`imported`), server secrets and past operations.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use super::{conflict_or, Result, Store};
use crate::model::*;

/// What an earlier import made of one object.
#[derive(Debug, Clone)]
pub struct ImportedRow {
    pub local_id: Id,
    pub fingerprint: String,
    pub state: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct ServerRow {
    pub name: String,
    pub transport: Transport,
    pub ssh_user: Option<String>,
    pub ssh_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub origin: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct ReleaseRow {
    pub name: String,
    pub project_id: Id,
    pub server_id: Id,
    pub path: String,
    pub app_kind: Option<AppKind>,
    pub app_version: Option<String>,
    pub packages: Vec<crate::apps::Package>,
    pub locked: bool,
    pub origin: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct EnvRow {
    pub uri: String,
    pub release_id: Id,
    pub server_id: Id,
    pub db_server_id: Option<Id>,
    pub status: EnvironmentStatus,
    pub https: HttpsMode,
    pub aliases: Vec<String>,
    pub redirect_aliases: bool,
    pub db_name: Option<String>,
    pub client: Option<String>,
    pub backup_interval: Option<i64>,
    pub retention: Option<crate::backup::retention::Policy>,
    pub origin: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct BackupRow {
    pub environment_id: Id,
    pub path: String,
    pub size: i64,
    pub status: BackupStatus,
    pub description: String,
    pub created_at: Timestamp,
}

/// An operation that ran elsewhere, recorded finished.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub target: TargetRef,
    pub status: OperationStatus,
    pub params: serde_json::Value,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// An open import transaction: nothing is visible to others until [`ImportTx::commit`], and
/// dropping it (or [`ImportTx::rollback`], for a dry run) leaves the store as it was.
pub struct ImportTx {
    tx: Transaction<'static, Any>,
}

impl Store {
    pub async fn begin_import(&self) -> Result<ImportTx> {
        Ok(ImportTx {
            tx: self.pool.begin().await?,
        })
    }

    /// A server's secret (e.g. `db_admin`), for the backend; never part of an API answer.
    pub async fn server_secret(&self, server_id: Id, name: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT value FROM server_secrets WHERE server_id = $1 AND name = $2")
                .bind(server_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }
}

impl ImportTx {
    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    pub async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }

    /// Everything imported from `source` so far, by (kind, key).
    pub async fn imported(
        &mut self,
        source: &str,
    ) -> Result<HashMap<(String, String), ImportedRow>> {
        let rows = sqlx::query(
            "SELECT kind, ref_key, local_id, fingerprint, state FROM imported WHERE source = $1",
        )
        .bind(source)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut out = HashMap::new();
        for r in rows {
            out.insert(
                (r.try_get("kind")?, r.try_get("ref_key")?),
                ImportedRow {
                    local_id: r.try_get("local_id")?,
                    fingerprint: r.try_get("fingerprint")?,
                    state: serde_json::from_str(&r.try_get::<String, _>("state")?)?,
                },
            );
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn save_imported(
        &mut self,
        source: &str,
        kind: &str,
        key: &str,
        local_id: Id,
        fingerprint: &str,
        state: &serde_json::Value,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO imported (source, kind, ref_key, local_id, fingerprint, state, \
             first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (source, kind, ref_key) DO UPDATE SET local_id = $4, \
             fingerprint = $5, state = $6, last_at = $7",
        )
        .bind(source)
        .bind(kind)
        .bind(key)
        .bind(local_id)
        .bind(fingerprint)
        .bind(serde_json::to_string(state)?)
        .bind(now.0)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn id_by(&mut self, sql: &str, key: &str) -> Result<Option<Id>> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn server_id(&mut self, name: &str) -> Result<Option<Id>> {
        self.id_by("SELECT id FROM servers WHERE name = $1", name)
            .await
    }

    pub async fn project_id(&mut self, name: &str) -> Result<Option<Id>> {
        self.id_by("SELECT id FROM projects WHERE name = $1", name)
            .await
    }

    pub async fn release_id(&mut self, name: &str) -> Result<Option<Id>> {
        self.id_by("SELECT id FROM releases WHERE name = $1", name)
            .await
    }

    /// The live (not deleted) environment at `uri`.
    pub async fn live_environment_id(&mut self, uri: &str) -> Result<Option<Id>> {
        self.id_by(
            "SELECT id FROM environments WHERE uri = $1 AND status <> 'deleted'",
            uri,
        )
        .await
    }

    pub async fn environment_managed_by(&mut self, id: Id) -> Result<Option<Management>> {
        let row = sqlx::query("SELECT managed_by FROM environments WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row
            .map(|r| r.try_get::<String, _>("managed_by"))
            .transpose()?
            .map(|m| m.parse())
            .transpose()?)
    }

    pub async fn insert_server(&mut self, s: &ServerRow, now: Timestamp) -> Result<Id> {
        let id = sqlx::query(
            "INSERT INTO servers (name, transport, ssh_user, ssh_host, ssh_port, status, \
             services, origin, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(&s.name)
        .bind(s.transport.as_str())
        .bind(&s.ssh_user)
        .bind(&s.ssh_host)
        .bind(s.ssh_port.map(i64::from))
        .bind(ServerStatus::New.as_str())
        .bind(serde_json::to_string(&DetectedServices::default())?)
        .bind(serde_json::to_string(&s.origin)?)
        .bind(now.0)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| conflict_or(e, || format!("server {:?}", s.name)))?
        .try_get("id")?;
        Ok(id)
    }

    /// Only what the other installation knows changes; how aegird reaches the server (and
    /// what its verify found) is aegird's.
    pub async fn update_server_origin(
        &mut self,
        id: Id,
        origin: &serde_json::Value,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query("UPDATE servers SET origin = $1, updated_at = $2 WHERE id = $3")
            .bind(serde_json::to_string(origin)?)
            .bind(now.0)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn put_server_secret(
        &mut self,
        server_id: Id,
        name: &str,
        value: &str,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO server_secrets (server_id, name, value, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (server_id, name) DO UPDATE SET value = $3, updated_at = $4",
        )
        .bind(server_id)
        .bind(name)
        .bind(value)
        .bind(now.0)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_project(&mut self, name: &str, path: &str, now: Timestamp) -> Result<Id> {
        let id = sqlx::query(
            "INSERT INTO projects (name, source, path, created_at) VALUES ($1, 'path', $2, $3) \
             RETURNING id",
        )
        .bind(name)
        .bind(path)
        .bind(now.0)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| conflict_or(e, || format!("project {name:?}")))?
        .try_get("id")?;
        Ok(id)
    }

    pub async fn update_project(&mut self, id: Id, path: &str) -> Result<()> {
        sqlx::query("UPDATE projects SET path = $1 WHERE id = $2")
            .bind(path)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Inserts, or with `id` overwrites, a release made from another installation's platform.
    pub async fn put_release(
        &mut self,
        id: Option<Id>,
        r: &ReleaseRow,
        now: Timestamp,
    ) -> Result<Id> {
        let sql = match id {
            None => {
                "INSERT INTO releases (name, project_id, server_id, path, app_kind, app_version, \
                 docroot, packages, locked, origin, status, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, '', $7, $8, $9, 'new', $10) RETURNING id"
            }
            Some(_) => {
                "UPDATE releases SET name = $1, project_id = $2, server_id = $3, path = $4, \
                 app_kind = $5, app_version = $6, packages = $7, locked = $8, origin = $9 \
                 WHERE id = $10 RETURNING id"
            }
        };
        let id = sqlx::query(sql)
            .bind(&r.name)
            .bind(r.project_id)
            .bind(r.server_id)
            .bind(&r.path)
            .bind(r.app_kind.map(|k| k.as_str()))
            .bind(&r.app_version)
            .bind(serde_json::to_string(&r.packages)?)
            .bind(i64::from(r.locked))
            .bind(serde_json::to_string(&r.origin)?)
            // $10: the creation time of an insert, the row of an update.
            .bind(id.unwrap_or(now.0))
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| conflict_or(e, || format!("release {:?}", r.name)))?
            .try_get("id")?;
        Ok(id)
    }

    /// Inserts, or with `id` overwrites, an environment adopted from another installation:
    /// it is that installation's (`managed_by`) until taken over.
    pub async fn put_environment(
        &mut self,
        id: Option<Id>,
        e: &EnvRow,
        now: Timestamp,
    ) -> Result<Id> {
        let sql = match id {
            None => {
                "INSERT INTO environments (uri, release_id, server_id, db_server_id, status, \
                 https, aliases, redirect_aliases, db_name, client, backup_interval, retention, \
                 origin, managed_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'aegir3', $14, $14) \
                 RETURNING id"
            }
            Some(_) => {
                "UPDATE environments SET uri = $1, release_id = $2, server_id = $3, \
                 db_server_id = $4, status = $5, https = $6, aliases = $7, redirect_aliases = $8, \
                 db_name = $9, client = $10, backup_interval = $11, retention = $12, \
                 origin = $13, updated_at = $14 WHERE id = $15 RETURNING id"
            }
        };
        let q = sqlx::query(sql)
            .bind(&e.uri)
            .bind(e.release_id)
            .bind(e.server_id)
            .bind(e.db_server_id)
            .bind(e.status.as_str())
            .bind(e.https.as_str())
            .bind(serde_json::to_string(&e.aliases)?)
            .bind(i64::from(e.redirect_aliases))
            .bind(&e.db_name)
            .bind(&e.client)
            .bind(e.backup_interval)
            .bind(e.retention.map(|r| serde_json::to_string(&r)).transpose()?)
            .bind(serde_json::to_string(&e.origin)?)
            .bind(now.0);
        // The id is the update's last parameter; an insert has none.
        let q = match id {
            Some(id) => q.bind(id),
            None => q,
        };
        let id = q
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|err| conflict_or(err, || format!("environment {:?}", e.uri)))?
            .try_get("id")?;
        Ok(id)
    }

    pub async fn put_backup(&mut self, id: Option<Id>, b: &BackupRow) -> Result<Id> {
        let sql = match id {
            None => {
                "INSERT INTO backups (environment_id, path, size, status, reason, format, \
                 description, created_at) VALUES ($1, $2, $3, $4, 'imported', 'aegir3', $5, $6) \
                 RETURNING id"
            }
            Some(_) => {
                "UPDATE backups SET environment_id = $1, path = $2, size = $3, status = $4, \
                 description = $5, created_at = $6 WHERE id = $7 AND status <> 'deleted' \
                 RETURNING id"
            }
        };
        let q = sqlx::query(sql)
            .bind(b.environment_id)
            .bind(&b.path)
            .bind(b.size)
            .bind(b.status.as_str())
            .bind(&b.description)
            .bind(b.created_at.0);
        // The id is the update's last parameter; an insert has none.
        let q = match id {
            Some(id) => q.bind(id),
            None => q,
        };
        let row = q.fetch_optional(&mut *self.tx).await?;
        // A backup deleted in aegird since stays deleted.
        Ok(match row {
            Some(r) => r.try_get("id")?,
            None => id.unwrap_or_default(),
        })
    }

    pub async fn put_history(&mut self, id: Option<Id>, h: &HistoryRow) -> Result<Id> {
        let sql = match id {
            None => {
                "INSERT INTO operations (kind, target_type, target_id, target_name, target_key, \
                 mutating, status, params, error, created_at, started_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $9, $10) RETURNING id"
            }
            Some(_) => {
                "UPDATE operations SET kind = $1, target_type = $2, target_id = $3, \
                 target_name = $4, target_key = $5, status = $6, params = $7, error = $8, \
                 created_at = $9, started_at = $9, finished_at = $10 WHERE id = $11 RETURNING id"
            }
        };
        let q = sqlx::query(sql)
            .bind(OperationKind::Aegir3Task.as_str())
            .bind(h.target.target_type.as_str())
            .bind(h.target.id)
            .bind(&h.target.name)
            .bind(h.target.key())
            .bind(h.status.as_str())
            .bind(serde_json::to_string(&h.params)?)
            .bind(&h.error)
            .bind(h.started_at.0)
            .bind(h.finished_at.0);
        // The id is the update's last parameter; an insert has none.
        let q = match id {
            Some(id) => q.bind(id),
            None => q,
        };
        let id = q.fetch_one(&mut *self.tx).await?.try_get("id")?;
        Ok(id)
    }

    pub async fn append_history_log(
        &mut self,
        op: Id,
        ts: Timestamp,
        level: LogLevel,
        message: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO task_logs (operation_id, task_seq, ts, level, message) \
             VALUES ($1, NULL, $2, $3, $4)",
        )
        .bind(op)
        .bind(ts.0)
        .bind(level.as_str())
        .bind(message)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
