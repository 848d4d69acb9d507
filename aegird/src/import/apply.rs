//! Writing a plan into the store, in one transaction: each object is adopted, updated (when
//! it changed since the last import), left unchanged, skipped or failed, and says which.

use std::collections::HashMap;

use serde_json::Value;

use super::plan::{Plan, Record, Ref, What};
use crate::model::*;
use crate::store::imports::{BackupRow, EnvRow, HistoryRow, ImportTx, ReleaseRow, ServerRow};
use crate::store::{Store, StoreError};

/// What happened to one record, before it becomes a report line.
struct Done {
    outcome: ImportOutcome,
    reason: Option<String>,
    changes: Vec<String>,
    warnings: Vec<String>,
}

impl Done {
    fn new(outcome: ImportOutcome) -> Done {
        Done {
            outcome,
            reason: None,
            changes: Vec::new(),
            warnings: Vec::new(),
        }
    }
    fn failed(reason: String) -> Done {
        Done {
            reason: Some(reason),
            ..Done::new(ImportOutcome::Failed)
        }
    }
    fn skipped(reason: String) -> Done {
        Done {
            reason: Some(reason),
            ..Done::new(ImportOutcome::Skipped)
        }
    }
}

fn fingerprint(state: &Value) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(state.to_string().as_bytes()))
}

/// The fields that differ between two versions of a record, as dotted paths (`origin` is
/// compared one level into its Aegir 3 facts, so "origin.aegir3.verified" says which).
fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    fn walk(prefix: &str, old: &Value, new: &Value, depth: usize, out: &mut Vec<String>) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) if depth > 0 => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    let deeper = if k == "origin" || k == "aegir3" || k == "params" {
                        depth
                    } else {
                        1
                    };
                    walk(
                        &path,
                        a.get(k).unwrap_or(&Value::Null),
                        b.get(k).unwrap_or(&Value::Null),
                        deeper - 1,
                        out,
                    );
                }
            }
            _ if old != new => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", old, new, 3, &mut out);
    out
}

/// Applies `plan` as the import of `source`; with `dry_run` everything is rolled back at the
/// end, so the report says exactly what a real run would do.
pub async fn apply(
    store: &Store,
    source: &str,
    plan: Plan,
    dry_run: bool,
    now: Timestamp,
) -> Result<Vec<ImportItem>, StoreError> {
    let mut tx = store.begin_import().await?;
    let known = tx.imported(source).await?;
    let mut resolved: HashMap<Ref, Id> = HashMap::new();
    let mut items = Vec::with_capacity(plan.items.len());
    for p in plan.items {
        let done = match p.what {
            What::Skip(why) => Done::skipped(why),
            What::Fail(why) => Done::failed(why),
            What::Record(rec) => {
                let state = serde_json::to_value(&rec)?;
                let key = (p.r#ref.kind.as_str().to_string(), p.r#ref.key.clone());
                let before = known.get(&key);
                let fp = fingerprint(&state);
                let mut w = Writer {
                    tx: &mut tx,
                    resolved: &resolved,
                    now,
                };
                let result = match before {
                    Some(b) if b.fingerprint == fp => {
                        // Log lines only ever grow with the task's revision; nothing to add.
                        Ok((b.local_id, Done::new(ImportOutcome::Unchanged)))
                    }
                    Some(b) => {
                        w.write(&rec, Some((b.local_id, &b.state)))
                            .await?
                            .map(|(id, mut d)| {
                                if d.outcome == ImportOutcome::Updated {
                                    d.changes = changed_fields(&b.state, &state);
                                }
                                (id, d)
                            })
                    }
                    None => w.write(&rec, None).await?,
                };
                match result {
                    Ok((id, done)) => {
                        // A record left alone on purpose keeps its old fingerprint, so the
                        // next import says the same.
                        if matches!(
                            done.outcome,
                            ImportOutcome::Adopted | ImportOutcome::Updated
                        ) {
                            tx.save_imported(source, &key.0, &key.1, id, &fp, &state, now)
                                .await?;
                        }
                        resolved.insert(p.r#ref.clone(), id);
                        done
                    }
                    Err(why) => Done::failed(why),
                }
            }
        };
        let mut warnings = p.warnings;
        warnings.extend(done.warnings);
        items.push(ImportItem {
            kind: p.r#ref.kind,
            aegir3: p.r#ref.key,
            label: p.label,
            outcome: done.outcome,
            reason: done.reason,
            changes: done.changes,
            warnings,
        });
    }
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(items)
}

struct Writer<'a> {
    tx: &'a mut ImportTx,
    resolved: &'a HashMap<Ref, Id>,
    now: Timestamp,
}

/// `Ok(Err(why))`: this record failed, the import goes on.
type Step = Result<Result<(Id, Done), String>, StoreError>;

impl Writer<'_> {
    fn dep(&self, r: &Ref) -> Result<Id, String> {
        self.resolved
            .get(r)
            .copied()
            .ok_or_else(|| format!("it needs {} {}, which was not imported", r.kind, r.key))
    }

    async fn write(&mut self, rec: &Record, before: Option<(Id, &Value)>) -> Step {
        let id = before.map(|(id, _)| id);
        let outcome = if id.is_some() {
            ImportOutcome::Updated
        } else {
            ImportOutcome::Adopted
        };
        let now = self.now;
        match rec {
            Record::Server(s) => {
                let mut done = Done::new(outcome);
                let id = match id {
                    Some(id) => {
                        self.tx.update_server_origin(id, &s.origin, now).await?;
                        id
                    }
                    None => match self.tx.server_id(&s.name).await? {
                        Some(existing) => {
                            done.warnings.push(format!(
                                "matched the server {} aegird already had; how aegird reaches it is left as it is",
                                s.name
                            ));
                            self.tx
                                .update_server_origin(existing, &s.origin, now)
                                .await?;
                            existing
                        }
                        None => {
                            self.tx
                                .insert_server(
                                    &ServerRow {
                                        name: s.name.clone(),
                                        transport: s.transport,
                                        ssh_user: s.ssh_user.clone(),
                                        ssh_host: s.ssh_host.clone(),
                                        ssh_port: s.ssh_port,
                                        origin: s.origin.clone(),
                                    },
                                    now,
                                )
                                .await?
                        }
                    },
                };
                if let Some((user, password)) = &s.db_admin {
                    let secret = serde_json::json!({ "user": user, "password": password });
                    self.tx
                        .put_server_secret(id, "db_admin", &secret.to_string(), now)
                        .await?;
                }
                Ok(Ok((id, done)))
            }
            Record::Project(p) => {
                let id = match id {
                    Some(id) => {
                        self.tx.update_project(id, &p.path).await?;
                        id
                    }
                    None => {
                        if self.tx.project_id(&p.name).await?.is_some() {
                            return Ok(Err(format!(
                                "aegird already has a project named {}",
                                p.name
                            )));
                        }
                        self.tx.insert_project(&p.name, &p.path, now).await?
                    }
                };
                Ok(Ok((id, Done::new(outcome))))
            }
            Record::Release(r) => {
                let (project_id, server_id) = match (self.dep(&r.project), self.dep(&r.server)) {
                    (Ok(p), Ok(s)) => (p, s),
                    (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
                };
                if id.is_none() && self.tx.release_id(&r.name).await?.is_some() {
                    return Ok(Err(format!(
                        "aegird already has a release named {}",
                        r.name
                    )));
                }
                let row = ReleaseRow {
                    name: r.name.clone(),
                    project_id,
                    server_id,
                    path: r.path.clone(),
                    app_kind: r.app_kind,
                    app_version: r.app_version.clone(),
                    packages: r.packages.clone(),
                    locked: r.locked,
                    origin: r.origin.clone(),
                };
                let id = self.tx.put_release(id, &row, now).await?;
                Ok(Ok((id, Done::new(outcome))))
            }
            Record::Environment(e) => {
                let (release_id, server_id) = match (self.dep(&e.release), self.dep(&e.server)) {
                    (Ok(r), Ok(s)) => (r, s),
                    (Err(x), _) | (_, Err(x)) => return Ok(Err(x)),
                };
                let mut done = Done::new(outcome);
                let db_server_id = match &e.db_server {
                    Some(r) => match self.dep(r) {
                        Ok(id) => Some(id),
                        Err(why) => {
                            done.warnings
                                .push(format!("database server unknown: {why}"));
                            None
                        }
                    },
                    None => None,
                };
                if let Some(id) = id {
                    if self.tx.environment_managed_by(id).await? == Some(Management::Aegird) {
                        return Ok(Ok((
                            id,
                            Done::skipped(
                                "taken over by aegird; what changed in Aegir 3 is not applied"
                                    .into(),
                            ),
                        )));
                    }
                }
                let live = e.status != EnvironmentStatus::Deleted;
                if live {
                    if let Some(other) = self.tx.live_environment_id(&e.uri).await? {
                        if Some(other) != id {
                            return Ok(Err(format!(
                                "aegird already has an environment at {}",
                                e.uri
                            )));
                        }
                    }
                }
                let row = EnvRow {
                    uri: e.uri.clone(),
                    release_id,
                    server_id,
                    db_server_id,
                    status: e.status,
                    https: e.https,
                    aliases: e.aliases.clone(),
                    redirect_aliases: e.redirect_aliases,
                    db_name: e.db_name.clone(),
                    client: e.client.clone(),
                    backup_interval: e.backup_interval,
                    retention: e.retention,
                    origin: e.origin.clone(),
                };
                let id = self.tx.put_environment(id, &row, now).await?;
                Ok(Ok((id, done)))
            }
            Record::Backup(b) => {
                let environment_id = match self.dep(&b.environment) {
                    Ok(id) => id,
                    Err(e) => return Ok(Err(e)),
                };
                let row = BackupRow {
                    environment_id,
                    path: b.path.clone(),
                    size: b.size,
                    status: if b.missing {
                        BackupStatus::Missing
                    } else {
                        BackupStatus::Good
                    },
                    description: b.description.clone(),
                    created_at: Timestamp(b.created_at),
                };
                let id = self.tx.put_backup(id, &row).await?;
                Ok(Ok((id, Done::new(outcome))))
            }
            Record::Task(t) => {
                let target_id = match self.dep(&t.target) {
                    Ok(id) => id,
                    Err(e) => return Ok(Err(e)),
                };
                let target_type = match t.target.kind {
                    ItemKind::Server => TargetType::Server,
                    ItemKind::Release => TargetType::Release,
                    _ => TargetType::Environment,
                };
                let row = HistoryRow {
                    target: TargetRef {
                        target_type,
                        id: target_id,
                        name: t.target_name.clone(),
                    },
                    status: t.status,
                    params: t.params.clone(),
                    error: t.error.clone(),
                    started_at: Timestamp(t.started_at),
                    finished_at: Timestamp(t.finished_at),
                };
                let op = self.tx.put_history(id, &row).await?;
                // Logs are append-only: only lines newer than the last import's are added.
                let seen = before
                    .and_then(|(_, s)| s.get("last_log"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                for l in t.logs.iter().filter(|l| l.lid > seen) {
                    self.tx
                        .append_history_log(op, Timestamp(l.ts), l.level, &l.message)
                        .await?;
                }
                Ok(Ok((op, Done::new(outcome))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_the_fields_that_differ() {
        let old =
            json!({"uri": "a", "https": "off", "origin": {"aegir3": {"verified": 1, "nid": 3}}});
        let new =
            json!({"uri": "a", "https": "on", "origin": {"aegir3": {"verified": 2, "nid": 3}}});
        assert_eq!(
            changed_fields(&old, &new),
            ["https", "origin.aegir3.verified"]
        );
        assert!(changed_fields(&old, &old).is_empty());
        let aliases = changed_fields(&json!({"aliases": ["a"]}), &json!({"aliases": ["a", "b"]}));
        assert_eq!(aliases, ["aliases"]);
    }
}
