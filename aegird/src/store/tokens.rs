//! API tokens, stored as SHA-256 hashes only.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{conflict_or, opt_ts, ts, Result, Store};
use crate::model::{ApiToken, Timestamp};

fn token_from(r: &AnyRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        created_at: ts(r, "created_at")?,
        last_used_at: opt_ts(r, "last_used_at")?,
    })
}

impl Store {
    pub async fn insert_token(
        &self,
        name: &str,
        token_hash: &str,
        prefix: &str,
        now: Timestamp,
    ) -> Result<ApiToken> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, prefix, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING *",
        )
        .bind(name)
        .bind(token_hash)
        .bind(prefix)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("token {name:?}")))?;
        token_from(&row)
    }

    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from).transpose()
    }

    /// Record use, at most once a minute per token so reads do not turn into writes.
    pub async fn touch_token(&self, id: i64, now: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now.0)
        .bind(id)
        .bind(now.0 - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from).collect()
    }

    /// True when a token of that name existed.
    pub async fn delete_token(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM api_tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether any token exists (the daemon prints a first-run hint when none does).
    pub async fn has_tokens(&self) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }
}
