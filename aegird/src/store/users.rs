//! Web UI accounts and their sessions: password hashes as given, sessions by the SHA-256 of
//! their cookie value.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{conflict_or, flag, opt_ts, ts, Result, Store};
use crate::model::{Id, Timestamp, User};

fn user_from(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        admin: flag(r, "admin")?,
        created_at: ts(r, "created_at")?,
        last_login_at: opt_ts(r, "last_login_at")?,
    })
}

/// What a login needs to know about an account.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub user: User,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Failed logins since the last successful one.
    pub failed_logins: i64,
    pub last_failed_at: Option<Timestamp>,
}

/// A live session: whose it is and the CSRF token its forms must carry.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub user: User,
    pub csrf: String,
    pub expires_at: Timestamp,
}

impl Store {
    pub async fn insert_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
        now: Timestamp,
    ) -> Result<User> {
        let row = sqlx::query(
            "INSERT INTO users (name, password_hash, admin, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING *",
        )
        .bind(name)
        .bind(password_hash)
        .bind(i64::from(admin))
        .bind(now.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("user {name:?}")))?;
        user_from(&row)
    }

    /// Sets a new password and ends the account's sessions. False when there is no such user.
    pub async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, last_failed_at = NULL \
             WHERE name = $2",
        )
        .bind(password_hash)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = $1)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn login_record(&self, name: &str) -> Result<Option<LoginRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(LoginRecord {
                user: user_from(&r)?,
                password_hash: r.try_get("password_hash")?,
                failed_logins: r.try_get("failed_logins")?,
                last_failed_at: opt_ts(&r, "last_failed_at")?,
            })
        })
        .transpose()
    }

    pub async fn record_login_failure(&self, user_id: Id, now: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1, last_failed_at = $1 \
             WHERE id = $2",
        )
        .bind(now.0)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the login and opens its session, removing expired sessions on the way.
    pub async fn open_session(
        &self,
        user_id: Id,
        id_hash: &str,
        csrf: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE users SET failed_logins = 0, last_failed_at = NULL, last_login_at = $1 \
             WHERE id = $2",
        )
        .bind(now.0)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf)
        .bind(now.0)
        .bind(expires_at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session with that hash, if it exists and has not expired.
    pub async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT u.*, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                user: user_from(&r)?,
                csrf: r.try_get("csrf")?,
                expires_at: ts(&r, "expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn close_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from).collect()
    }

    /// Removes the account and its sessions. True when it existed.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = $1)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether any account exists (the daemon prints a first-run hint when none does).
    pub async fn has_users(&self) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }
}
