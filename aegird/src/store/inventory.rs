//! Inventory rows: servers, clusters, projects, releases, environments and backups.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{conflict_or, flag, json, opt_json, opt_ts, parse, ts, Result, Store};
use crate::model::*;

/// A server as the application layer has validated it.
#[derive(Debug, Clone)]
pub struct NewServerRow {
    pub name: String,
    pub transport: Transport,
    pub ssh_user: Option<String>,
    pub ssh_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub ssh_host_key: Option<String>,
}

impl NewServerRow {
    /// The host aegird itself runs on.
    pub fn local(name: impl Into<String>) -> NewServerRow {
        NewServerRow {
            name: name.into(),
            transport: Transport::Local,
            ssh_user: None,
            ssh_host: None,
            ssh_port: None,
            ssh_host_key: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewReleaseRow {
    pub name: String,
    pub project_id: Id,
    pub server_id: Option<Id>,
    pub git_ref: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewEnvironmentRow {
    pub uri: String,
    pub release_id: Id,
    pub server_id: Id,
    pub status: EnvironmentStatus,
    pub https: HttpsMode,
    pub aliases: Vec<String>,
    pub redirect_aliases: bool,
    pub db_name: Option<String>,
}

fn server_from(r: &AnyRow) -> Result<Server> {
    Ok(Server {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        transport: parse(r, "transport")?,
        ssh_user: r.try_get("ssh_user")?,
        ssh_host: r.try_get("ssh_host")?,
        ssh_port: r.try_get::<Option<i64>, _>("ssh_port")?.map(|p| p as u16),
        ssh_host_key: r.try_get("ssh_host_key")?,
        status: parse(r, "status")?,
        services: json(r, "services")?,
        verified_at: opt_ts(r, "verified_at")?,
        origin: opt_json(r, "origin")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

fn cluster_from(r: &AnyRow) -> Result<Cluster> {
    Ok(Cluster {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        api_url: r.try_get("api_url")?,
        status: parse(r, "status")?,
        created_at: ts(r, "created_at")?,
    })
}

fn project_from(r: &AnyRow) -> Result<Project> {
    Ok(Project {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        source: parse(r, "source")?,
        git_url: r.try_get("git_url")?,
        git_ref: r.try_get("git_ref")?,
        path: r.try_get("path")?,
        created_at: ts(r, "created_at")?,
    })
}

const RELEASE_SELECT: &str =
    "SELECT r.id, r.name, p.name AS project, s.name AS server, r.git_ref, \
     r.path, r.app_kind, r.app_version, r.docroot, r.packages, r.locked, r.status, r.verified_at, \
     r.origin, r.created_at \
     FROM releases r JOIN projects p ON p.id = r.project_id \
     LEFT JOIN servers s ON s.id = r.server_id";

fn release_from(r: &AnyRow) -> Result<Release> {
    Ok(Release {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        project: r.try_get("project")?,
        server: r.try_get("server")?,
        git_ref: r.try_get("git_ref")?,
        path: r.try_get("path")?,
        app_kind: r
            .try_get::<Option<String>, _>("app_kind")?
            .map(|k| k.parse())
            .transpose()?,
        app_version: r.try_get("app_version")?,
        docroot: r.try_get("docroot")?,
        packages: json(r, "packages")?,
        locked: flag(r, "locked")?,
        status: parse(r, "status")?,
        verified_at: opt_ts(r, "verified_at")?,
        origin: opt_json(r, "origin")?,
        created_at: ts(r, "created_at")?,
    })
}

const ENV_SELECT: &str = "SELECT e.id, e.uri, r.name AS release_name, s.name AS server_name, \
     e.status, e.https, e.aliases, e.redirect_aliases, e.db_name, e.backup_interval, \
     (SELECT MAX(b.created_at) FROM backups b \
      WHERE b.environment_id = e.id AND b.status = 'good') AS last_backup_at, \
     e.retention, e.client, d.name AS db_server_name, e.managed_by, e.origin, \
     e.created_at, e.updated_at \
     FROM environments e JOIN releases r ON r.id = e.release_id \
     JOIN servers s ON s.id = e.server_id LEFT JOIN servers d ON d.id = e.db_server_id";

fn environment_from(r: &AnyRow) -> Result<Environment> {
    Ok(Environment {
        id: r.try_get("id")?,
        uri: r.try_get("uri")?,
        release: r.try_get("release_name")?,
        server: r.try_get("server_name")?,
        status: parse(r, "status")?,
        https: parse(r, "https")?,
        aliases: json(r, "aliases")?,
        redirect_aliases: flag(r, "redirect_aliases")?,
        db_name: r.try_get("db_name")?,
        backup_interval: r.try_get("backup_interval")?,
        last_backup_at: opt_ts(r, "last_backup_at")?,
        retention: opt_json(r, "retention")?,
        client: r.try_get("client")?,
        db_server: r.try_get("db_server_name")?,
        managed_by: parse(r, "managed_by")?,
        origin: opt_json(r, "origin")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

fn backup_from(r: &AnyRow) -> Result<Backup> {
    Ok(Backup {
        id: r.try_get("id")?,
        environment: r.try_get("uri")?,
        path: r.try_get("path")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
        status: parse(r, "status")?,
        reason: parse(r, "reason")?,
        format: parse(r, "format")?,
        description: r.try_get("description")?,
        operation_id: r.try_get("operation_id")?,
        created_at: ts(r, "created_at")?,
    })
}

/// A finished archive, as the backup step records it.
#[derive(Debug, Clone)]
pub struct NewBackupRow {
    pub environment_id: Id,
    pub path: String,
    pub size: i64,
    /// None for an archive registered without being read (an Aegir 3 tarball).
    pub sha256: Option<String>,
    pub reason: BackupReason,
    pub format: BackupFormat,
    pub description: Option<String>,
    pub operation_id: Option<Id>,
}

const BACKUP_SELECT: &str =
    "SELECT b.*, e.uri FROM backups b JOIN environments e ON e.id = b.environment_id";

impl Store {
    pub async fn insert_server(&self, s: &NewServerRow, now: Timestamp) -> Result<Server> {
        let row = sqlx::query(
            "INSERT INTO servers (name, transport, ssh_user, ssh_host, ssh_port, ssh_host_key, \
             status, services, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING *",
        )
        .bind(&s.name)
        .bind(s.transport.as_str())
        .bind(&s.ssh_user)
        .bind(&s.ssh_host)
        .bind(s.ssh_port.map(i64::from))
        .bind(&s.ssh_host_key)
        .bind(ServerStatus::New.as_str())
        .bind(serde_json::to_string(&DetectedServices::default())?)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("server {:?}", s.name)))?;
        server_from(&row)
    }

    pub async fn list_servers(&self) -> Result<Vec<Server>> {
        let rows = sqlx::query("SELECT * FROM servers ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(server_from).collect()
    }

    pub async fn server_by_name(&self, name: &str) -> Result<Option<Server>> {
        let row = sqlx::query("SELECT * FROM servers WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(server_from).transpose()
    }

    pub async fn server_by_id(&self, id: Id) -> Result<Option<Server>> {
        let row = sqlx::query("SELECT * FROM servers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(server_from).transpose()
    }

    /// Record what verify found (or that it failed, keeping what was found before).
    pub async fn record_server_verify(
        &self,
        id: Id,
        status: ServerStatus,
        services: Option<&DetectedServices>,
        now: Timestamp,
    ) -> Result<()> {
        match services {
            Some(svc) => {
                sqlx::query(
                    "UPDATE servers SET status = $1, services = $2, verified_at = $3, \
                     updated_at = $3 WHERE id = $4",
                )
                .bind(status.as_str())
                .bind(serde_json::to_string(svc)?)
                .bind(now.0)
                .bind(id)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("UPDATE servers SET status = $1, updated_at = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(now.0)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn insert_cluster(
        &self,
        name: &str,
        api_url: &str,
        now: Timestamp,
    ) -> Result<Cluster> {
        let row = sqlx::query(
            "INSERT INTO clusters (name, api_url, status, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING *",
        )
        .bind(name)
        .bind(api_url)
        .bind(ClusterStatus::New.as_str())
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("cluster {name:?}")))?;
        cluster_from(&row)
    }

    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        let rows = sqlx::query("SELECT * FROM clusters ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cluster_from).collect()
    }

    pub async fn cluster_by_name(&self, name: &str) -> Result<Option<Cluster>> {
        let row = sqlx::query("SELECT * FROM clusters WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cluster_from).transpose()
    }

    pub async fn insert_project(
        &self,
        name: &str,
        source: ProjectSource,
        git_url: Option<&str>,
        git_ref: Option<&str>,
        path: Option<&str>,
        now: Timestamp,
    ) -> Result<Project> {
        let row = sqlx::query(
            "INSERT INTO projects (name, source, git_url, git_ref, path, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(name)
        .bind(source.as_str())
        .bind(git_url)
        .bind(git_ref)
        .bind(path)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("project {name:?}")))?;
        project_from(&row)
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(project_from).collect()
    }

    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT * FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(project_from).transpose()
    }

    pub async fn insert_release(&self, r: &NewReleaseRow, now: Timestamp) -> Result<Release> {
        let id: Id = sqlx::query(
            "INSERT INTO releases (name, project_id, server_id, git_ref, path, status, \
             packages, created_at) VALUES ($1, $2, $3, $4, $5, $6, '[]', $7) RETURNING id",
        )
        .bind(&r.name)
        .bind(r.project_id)
        .bind(r.server_id)
        .bind(&r.git_ref)
        .bind(&r.path)
        .bind(ReleaseStatus::New.as_str())
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("release {:?}", r.name)))?
        .try_get("id")?;
        let row = sqlx::query(&format!("{RELEASE_SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        release_from(&row)
    }

    pub async fn list_releases(&self) -> Result<Vec<Release>> {
        let rows = sqlx::query(&format!("{RELEASE_SELECT} ORDER BY r.name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(release_from).collect()
    }

    pub async fn release_by_id(&self, id: Id) -> Result<Option<Release>> {
        let row = sqlx::query(&format!("{RELEASE_SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(release_from).transpose()
    }

    /// Where a release's codebase is, once built (None again when the build is undone).
    pub async fn set_release_path(&self, id: Id, path: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE releases SET path = $1 WHERE id = $2")
            .bind(path)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record what release verify found (or only the status, when it failed).
    pub async fn record_release_verify(
        &self,
        id: Id,
        status: ReleaseStatus,
        found: Option<(&crate::apps::Detected, &[crate::apps::Package])>,
        now: Timestamp,
    ) -> Result<()> {
        match found {
            Some((d, packages)) => {
                sqlx::query(
                    "UPDATE releases SET status = $1, app_kind = $2, app_version = $3, \
                     docroot = $4, packages = $5, verified_at = $6 WHERE id = $7",
                )
                .bind(status.as_str())
                .bind(d.kind.as_str())
                .bind(&d.version)
                .bind(&d.docroot)
                .bind(serde_json::to_string(packages)?)
                .bind(now.0)
                .bind(id)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("UPDATE releases SET status = $1 WHERE id = $2")
                    .bind(status.as_str())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn release_by_name(&self, name: &str) -> Result<Option<Release>> {
        let row = sqlx::query(&format!("{RELEASE_SELECT} WHERE r.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(release_from).transpose()
    }

    /// Insert an environment record. The uri must not belong to a live environment.
    pub async fn insert_environment(
        &self,
        e: &NewEnvironmentRow,
        now: Timestamp,
    ) -> Result<Environment> {
        let id: Id = sqlx::query(
            "INSERT INTO environments (uri, release_id, server_id, status, https, aliases, \
             redirect_aliases, db_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(&e.uri)
        .bind(e.release_id)
        .bind(e.server_id)
        .bind(e.status.as_str())
        .bind(e.https.as_str())
        .bind(serde_json::to_string(&e.aliases)?)
        .bind(i64::from(e.redirect_aliases))
        .bind(&e.db_name)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|err| conflict_or(err, || format!("environment {:?}", e.uri)))?
        .try_get("id")?;
        let row = sqlx::query(&format!("{ENV_SELECT} WHERE e.id = $1"))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        environment_from(&row)
    }

    /// A page of environments ordered by uri, optionally those whose uri contains `search`.
    pub async fn list_environments(
        &self,
        search: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Environment>> {
        // LIKE with the user's text escaped, so '%' and '_' match themselves.
        let pattern = search.map(|s| {
            let esc = s
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{esc}%")
        });
        // Case-insensitive on both engines (SQLite's LIKE is, PostgreSQL's is not); uris are
        // ASCII once IDNs are in punycode, so lower() is exact.
        let filter = "($1 IS NULL OR lower(e.uri) LIKE lower($1) ESCAPE '\\')";
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM environments e WHERE {filter}"
        ))
        .bind(&pattern)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(&format!(
            "{ENV_SELECT} WHERE {filter} ORDER BY e.uri, e.id LIMIT $2 OFFSET $3"
        ))
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok(Page {
            items: rows.iter().map(environment_from).collect::<Result<_>>()?,
            total,
            limit,
            offset,
        })
    }

    /// How many environments have each status (the dashboard), deleted ones included.
    pub async fn environment_counts(&self) -> Result<Vec<(EnvironmentStatus, i64)>> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM environments GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((parse(r, "status")?, r.try_get("n")?)))
            .collect()
    }

    /// Active environments whose last good backup is oldest, those with none first.
    pub async fn environments_by_backup_age(&self, limit: i64) -> Result<Vec<Environment>> {
        // Wrapped, because PostgreSQL cannot order by an output column inside an expression.
        let rows = sqlx::query(&format!(
            "SELECT * FROM ({ENV_SELECT} WHERE e.status = 'active') x \
             ORDER BY COALESCE(x.last_backup_at, 0), x.uri LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(environment_from).collect()
    }

    pub async fn environment_by_id(&self, id: Id) -> Result<Option<Environment>> {
        let row = sqlx::query(&format!("{ENV_SELECT} WHERE e.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(environment_from).transpose()
    }

    /// Move an environment to `to`, only from one of `from` (a guarded UPDATE, so two
    /// operations can never both believe they made the transition). False if it was in
    /// another status.
    pub async fn set_environment_status(
        &self,
        id: Id,
        from: &[EnvironmentStatus],
        to: EnvironmentStatus,
        now: Timestamp,
    ) -> Result<bool> {
        // At most a handful of statuses: spelled out as literals from a closed enum.
        let list = from
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let done = sqlx::query(&format!(
            "UPDATE environments SET status = $1, updated_at = $2 \
             WHERE id = $3 AND status IN ({list})"
        ))
        .bind(to.as_str())
        .bind(now.0)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|err| conflict_or(err, || format!("environment {id}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Hands an environment from one manager to the other, only if `from` has it.
    pub async fn set_environment_managed_by(
        &self,
        id: Id,
        from: Management,
        to: Management,
        now: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environments SET managed_by = $1, updated_at = $2 \
             WHERE id = $3 AND managed_by = $4",
        )
        .bind(to.as_str())
        .bind(now.0)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The live (not deleted) environment at `uri`.
    pub async fn environment_by_uri(&self, uri: &str) -> Result<Option<Environment>> {
        let row = sqlx::query(&format!(
            "{ENV_SELECT} WHERE e.uri = $1 AND e.status <> 'deleted'"
        ))
        .bind(uri)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(environment_from).transpose()
    }

    /// Backups, newest first: of one environment or all, deleted ones only if asked.
    pub async fn list_backups(
        &self,
        environment_id: Option<Id>,
        include_deleted: bool,
    ) -> Result<Vec<Backup>> {
        let rows = sqlx::query(&format!(
            "{BACKUP_SELECT} WHERE ($1 IS NULL OR b.environment_id = $1) \
             AND ($2 = 1 OR b.status <> 'deleted') ORDER BY b.created_at DESC, b.id DESC"
        ))
        .bind(environment_id)
        .bind(i64::from(include_deleted))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(backup_from).collect()
    }

    pub async fn backup_by_id(&self, id: Id) -> Result<Option<Backup>> {
        let row = sqlx::query(&format!("{BACKUP_SELECT} WHERE b.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(backup_from).transpose()
    }

    /// The environment a backup belongs to, deleted or not.
    pub async fn environment_by_backup(&self, backup_id: Id) -> Result<Option<Environment>> {
        let row = sqlx::query(&format!(
            "{ENV_SELECT} WHERE e.id = (SELECT environment_id FROM backups WHERE id = $1)"
        ))
        .bind(backup_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(environment_from).transpose()
    }

    /// Record a backup whose archive is complete and in place.
    pub async fn insert_backup(&self, b: &NewBackupRow, now: Timestamp) -> Result<Backup> {
        let id: Id = sqlx::query(
            "INSERT INTO backups (environment_id, path, size, sha256, status, reason, format, \
             description, operation_id, created_at) \
             VALUES ($1, $2, $3, $4, 'good', $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(b.environment_id)
        .bind(&b.path)
        .bind(b.size)
        .bind(&b.sha256)
        .bind(b.reason.as_str())
        .bind(b.format.as_str())
        .bind(&b.description)
        .bind(b.operation_id)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?
        .try_get("id")?;
        self.backup_by_id(id)
            .await?
            .ok_or_else(|| super::StoreError::Conflict(format!("backup {id} vanished")))
    }

    /// The backups an operation took (its undo removes them).
    pub async fn backups_of_operation(&self, operation_id: Id) -> Result<Vec<Backup>> {
        let rows = sqlx::query(&format!(
            "{BACKUP_SELECT} WHERE b.operation_id = $1 ORDER BY b.id"
        ))
        .bind(operation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(backup_from).collect()
    }

    /// Mark a backup deleted (its archive is gone); false if it already was.
    pub async fn mark_backup_deleted(&self, id: Id) -> Result<bool> {
        let done =
            sqlx::query("UPDATE backups SET status = 'deleted' WHERE id = $1 AND status = 'good'")
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Seconds between scheduled backups of one environment (None: the daemon's default).
    pub async fn set_backup_interval(
        &self,
        environment_id: Id,
        interval: Option<i64>,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query("UPDATE environments SET backup_interval = $1, updated_at = $2 WHERE id = $3")
            .bind(interval)
            .bind(now.0)
            .bind(environment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The environment's own retention of scheduled backups (None: the daemon's).
    pub async fn set_environment_retention(
        &self,
        environment_id: Id,
        retention: Option<&crate::backup::retention::Policy>,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query("UPDATE environments SET retention = $1, updated_at = $2 WHERE id = $3")
            .bind(retention.map(serde_json::to_string).transpose()?)
            .bind(now.0)
            .bind(environment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Active environments whose last good backup is older than their interval
    /// (`default_interval` seconds unless they set their own), with nothing queued or running
    /// on them, and whose last failed backup is older than `retry_cap` seconds or their
    /// interval, whichever is shorter (so a failing backup is retried, not re-queued at
    /// every tick).
    pub async fn environments_due_for_backup(
        &self,
        now: Timestamp,
        default_interval: i64,
        retry_cap: i64,
    ) -> Result<Vec<Environment>> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM ({ENV_SELECT} WHERE e.status = 'active' \
               AND COALESCE(e.backup_interval, $1) > 0 \
               AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.target_type = 'environment' \
                   AND o.target_id = e.id AND o.status IN ('queued', 'running')) \
               AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.target_type = 'environment' \
                   AND o.target_id = e.id AND o.kind = 'env.backup' \
                   AND o.status IN ('failed', 'cancelled', 'interrupted') \
                   AND o.created_at > $3 - 1000 * CASE WHEN COALESCE(e.backup_interval, $1) < $2 \
                       THEN COALESCE(e.backup_interval, $1) ELSE $2 END)) x \
             WHERE x.last_backup_at IS NULL \
                OR x.last_backup_at <= $3 - COALESCE(x.backup_interval, $1) * 1000 \
             ORDER BY x.id"
        ))
        .bind(default_interval)
        .bind(retry_cap)
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(environment_from).collect()
    }
}
