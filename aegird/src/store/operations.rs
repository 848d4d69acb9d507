//! Operations, their tasks and their log lines, with every status change guarded in SQL so
//! two workers (or two daemons) can never both move the same operation.

use sqlx::any::AnyRow;
use sqlx::{Acquire, Row};

use super::{flag, json, opt_ts, parse, ts, Engine, Result, Store};
use crate::model::*;

/// Filters for listing operations.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub status: Option<OperationStatus>,
    pub target: Option<(TargetType, Id)>,
    pub limit: i64,
    pub offset: i64,
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was still queued and is now cancelled.
    Cancelled,
    /// It is running; its worker stops it at the next chance and undoes what it did.
    Requested,
    /// It had already ended with this status.
    AlreadyFinished(OperationStatus),
    NotFound,
}

/// A running operation whose worker is gone (its lease expired, or it belonged to an earlier
/// life of this daemon).
#[derive(Debug, Clone)]
pub struct RecoveryCandidate {
    pub operation: Operation,
    pub lease_owner: String,
}

fn operation_from(r: &AnyRow) -> Result<Operation> {
    Ok(Operation {
        id: r.try_get("id")?,
        kind: parse(r, "kind")?,
        target: TargetRef {
            target_type: parse(r, "target_type")?,
            id: r.try_get("target_id")?,
            name: r.try_get("target_name")?,
        },
        mutating: flag(r, "mutating")?,
        status: parse(r, "status")?,
        params: json(r, "params")?,
        retry_of: r.try_get("retry_of")?,
        attempt: r.try_get("attempt")?,
        cancel_requested: flag(r, "cancel_requested")?,
        error: r.try_get("error")?,
        created_at: ts(r, "created_at")?,
        started_at: opt_ts(r, "started_at")?,
        finished_at: opt_ts(r, "finished_at")?,
    })
}

fn task_from(r: &AnyRow) -> Result<Task> {
    Ok(Task {
        seq: r.try_get("seq")?,
        name: r.try_get("name")?,
        status: parse(r, "status")?,
        error: r.try_get("error")?,
        output: json(r, "output")?,
        started_at: opt_ts(r, "started_at")?,
        finished_at: opt_ts(r, "finished_at")?,
    })
}

fn log_from(r: &AnyRow) -> Result<LogLine> {
    Ok(LogLine {
        id: r.try_get("id")?,
        operation_id: r.try_get("operation_id")?,
        task_seq: r.try_get("task_seq")?,
        ts: ts(r, "ts")?,
        level: parse(r, "level")?,
        message: r.try_get("message")?,
    })
}

/// The next queued operation that may start: the oldest one whose target has no running
/// operation it conflicts with and no older queued one ahead of it. An operation conflicts
/// with another on the same target when either of them is mutating.
const CLAIM: &str = "UPDATE operations SET status = 'running', lease_owner = $1, \
     lease_expires_at = $2, started_at = COALESCE(started_at, $3), attempt = attempt + 1 \
     WHERE status = 'queued' AND id = ( \
       SELECT o.id FROM operations o WHERE o.status = 'queued' AND NOT EXISTS ( \
         SELECT 1 FROM operations p WHERE p.target_key = o.target_key AND p.id <> o.id \
           AND (p.status = 'running' OR (p.status = 'queued' AND p.id < o.id)) \
           AND (p.mutating = 1 OR o.mutating = 1)) \
       ORDER BY o.id LIMIT 1) \
     RETURNING *";

/// Serialises claims across daemons sharing one PostgreSQL store (any constant will do; it
/// only has to be the same everywhere).
const CLAIM_LOCK_KEY: i64 = 0x4145_4749_5200;

impl Store {
    /// Queue an operation with its planned tasks, in one transaction.
    pub async fn enqueue_operation(
        &self,
        kind: OperationKind,
        target: &TargetRef,
        params: &serde_json::Value,
        retry_of: Option<Id>,
        task_names: &[String],
        now: Timestamp,
    ) -> Result<Operation> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO operations (kind, target_type, target_id, target_name, target_key, \
             mutating, status, params, retry_of, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9) RETURNING *",
        )
        .bind(kind.as_str())
        .bind(target.target_type.as_str())
        .bind(target.id)
        .bind(&target.name)
        .bind(target.key())
        .bind(i64::from(kind.mutating()))
        .bind(serde_json::to_string(params)?)
        .bind(retry_of)
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await?;
        let op = operation_from(&row)?;
        for (seq, name) in task_names.iter().enumerate() {
            sqlx::query(
                "INSERT INTO tasks (operation_id, seq, name, status) VALUES ($1, $2, $3, 'pending')",
            )
            .bind(op.id)
            .bind(seq as i64)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(op)
    }

    pub async fn operation(&self, id: Id) -> Result<Option<Operation>> {
        let row = sqlx::query("SELECT * FROM operations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(operation_from).transpose()
    }

    pub async fn tasks(&self, operation_id: Id) -> Result<Vec<Task>> {
        let rows = sqlx::query("SELECT * FROM tasks WHERE operation_id = $1 ORDER BY seq")
            .bind(operation_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from).collect()
    }

    /// Newest first.
    pub async fn list_operations(&self, f: &OperationFilter) -> Result<Page<Operation>> {
        let status = f.status.map(|s| s.as_str());
        let (ttype, tid) = match f.target {
            Some((t, id)) => (Some(t.as_str()), Some(id)),
            None => (None, None),
        };
        let filter = "($1 IS NULL OR status = $1) AND ($2 IS NULL OR target_type = $2) \
                      AND ($3 IS NULL OR target_id = $3)";
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM operations WHERE {filter}"
        ))
        .bind(status)
        .bind(ttype)
        .bind(tid)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM operations WHERE {filter} ORDER BY id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(status)
        .bind(ttype)
        .bind(tid)
        .bind(f.limit)
        .bind(f.offset)
        .fetch_all(&self.pool)
        .await?;
        Ok(Page {
            items: rows.iter().map(operation_from).collect::<Result<_>>()?,
            total,
            limit: f.limit,
            offset: f.offset,
        })
    }

    /// Claim the next operation that may run, for `owner`, until `lease_until`.
    pub async fn claim_next(
        &self,
        owner: &str,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<Operation>> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        if self.engine == Engine::Postgres {
            // Without this, two daemons could each see the other's candidate as still
            // queued and start two operations on one target.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CLAIM_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(CLAIM)
            .bind(owner)
            .bind(lease_until.0)
            .bind(now.0)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(operation_from).transpose()
    }

    /// Extend the lease of every operation `owner` runs. Returns how many it still holds.
    pub async fn heartbeat(&self, owner: &str, lease_until: Timestamp) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE operations SET lease_expires_at = $1 \
             WHERE lease_owner = $2 AND status = 'running'",
        )
        .bind(lease_until.0)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Ids of operations run by `owner` that a user asked to cancel (possibly through another
    /// daemon).
    pub async fn cancel_requested(&self, owner: &str) -> Result<Vec<Id>> {
        let rows = sqlx::query(
            "SELECT id FROM operations WHERE lease_owner = $1 AND status = 'running' \
             AND cancel_requested = 1",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("id")?))
            .collect()
    }

    /// Mark a task running, only while `owner` still holds the operation.
    pub async fn start_task(&self, op: Id, seq: i64, owner: &str, now: Timestamp) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tasks SET status = 'running', started_at = $1, finished_at = NULL, \
             error = NULL WHERE operation_id = $2 AND seq = $3 AND EXISTS (\
             SELECT 1 FROM operations WHERE id = $2 AND status = 'running' AND lease_owner = $4)",
        )
        .bind(now.0)
        .bind(op)
        .bind(seq)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Record how a task ended, only while `owner` still holds the operation (a worker that
    /// lost its lease must not overwrite what the new holder records). False when not ours.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_task(
        &self,
        op: Id,
        seq: i64,
        owner: &str,
        status: TaskStatus,
        output: Option<&serde_json::Value>,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let output = match output {
            Some(v) => Some(serde_json::to_string(v)?),
            None => None,
        };
        let r = sqlx::query(
            "UPDATE tasks SET status = $1, output = COALESCE($2, output), error = $3, \
             finished_at = $4 WHERE operation_id = $5 AND seq = $6 AND EXISTS (\
             SELECT 1 FROM operations WHERE id = $5 AND status = 'running' AND lease_owner = $7)",
        )
        .bind(status.as_str())
        .bind(output)
        .bind(error)
        .bind(now.0)
        .bind(op)
        .bind(seq)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Tasks still pending when an operation ends are marked skipped.
    pub async fn skip_pending_tasks(&self, op: Id) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET status = 'skipped' WHERE operation_id = $1 AND status = 'pending'",
        )
        .bind(op)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// End a running operation held by `owner`. False when it is no longer ours.
    pub async fn finish_operation(
        &self,
        op: Id,
        owner: &str,
        to: OperationStatus,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        debug_assert!(to.is_final());
        let r = sqlx::query(
            "UPDATE operations SET status = $1, error = $2, finished_at = $3, \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $4 AND status = 'running' AND lease_owner = $5",
        )
        .bind(to.as_str())
        .bind(error)
        .bind(now.0)
        .bind(op)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Cancel a queued operation at once, or ask the worker of a running one to stop.
    pub async fn request_cancel(&self, op: Id, now: Timestamp) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE operations SET status = 'cancelled', cancel_requested = 1, finished_at = $1 \
             WHERE id = $2 AND status = 'queued'",
        )
        .bind(now.0)
        .bind(op)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            // In the same transaction: a cancelled operation never shows pending tasks.
            sqlx::query(
                "UPDATE tasks SET status = 'skipped' WHERE operation_id = $1 AND status = 'pending'",
            )
            .bind(op)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(CancelOutcome::Cancelled);
        }
        let r = sqlx::query(
            "UPDATE operations SET cancel_requested = 1 WHERE id = $1 AND status = 'running'",
        )
        .bind(op)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if r.rows_affected() == 1 {
            return Ok(CancelOutcome::Requested);
        }
        Ok(match self.operation(op).await? {
            Some(o) => CancelOutcome::AlreadyFinished(o.status),
            None => CancelOutcome::NotFound,
        })
    }

    /// Running operations whose worker is gone: the lease expired, or the lease belongs to an
    /// earlier life of this daemon (`previous_owner_prefix`, but not `me`).
    pub async fn orphaned_operations(
        &self,
        now: Timestamp,
        previous_owner_prefix: &str,
        me: &str,
    ) -> Result<Vec<RecoveryCandidate>> {
        let rows = sqlx::query(
            "SELECT * FROM operations WHERE status = 'running' AND lease_owner <> $1 \
             AND (lease_expires_at < $2 OR substr(lease_owner, 1, length($3)) = $3) ORDER BY id",
        )
        .bind(me)
        .bind(now.0)
        .bind(previous_owner_prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RecoveryCandidate {
                    operation: operation_from(r)?,
                    lease_owner: r.try_get("lease_owner")?,
                })
            })
            .collect()
    }

    /// Put an orphaned operation back in the queue (its steps are idempotent, so it resumes
    /// from the step that was running). False if someone else got to it first.
    pub async fn requeue_orphan(&self, op: Id, old_owner: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE operations SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND status = 'running' AND lease_owner = $2",
        )
        .bind(op)
        .bind(old_owner)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE tasks SET status = 'pending', started_at = NULL \
             WHERE operation_id = $1 AND status = 'running'",
        )
        .bind(op)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Take over an orphaned operation to undo it. False if someone else got to it first.
    pub async fn adopt_orphan(
        &self,
        op: Id,
        old_owner: &str,
        me: &str,
        lease_until: Timestamp,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE operations SET lease_owner = $1, lease_expires_at = $2 \
             WHERE id = $3 AND status = 'running' AND lease_owner = $4",
        )
        .bind(me)
        .bind(lease_until.0)
        .bind(op)
        .bind(old_owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Append one log line. Log lines are never changed or removed (a trigger refuses it).
    pub async fn append_log(
        &self,
        op: Id,
        task_seq: Option<i64>,
        level: LogLevel,
        message: &str,
        now: Timestamp,
    ) -> Result<Id> {
        let id: Id = sqlx::query(
            "INSERT INTO task_logs (operation_id, task_seq, ts, level, message) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(op)
        .bind(task_seq)
        .bind(now.0)
        .bind(level.as_str())
        .bind(message)
        .fetch_one(&self.pool)
        .await?
        .try_get("id")?;
        Ok(id)
    }

    /// Log lines of an operation after line `after` (0 for all), oldest first.
    pub async fn logs_after(&self, op: Id, after: Id, limit: i64) -> Result<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT * FROM task_logs WHERE operation_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(op)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(log_from).collect()
    }
}
