//! Web UI accounts: argon2id password hashes, sessions with their CSRF token, and the delay
//! that repeated failed logins earn.
//!
//! The web UI is the only caller; the JSON API keeps its bearer tokens. A session cookie holds
//! 256 random bits and the store only their SHA-256 (as for API tokens), so a copy of the store
//! opens no session.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;

use crate::app::{token_hash, App, AppError, Result};
use crate::model::validate::{self, Invalid};
use crate::model::{Timestamp, User};
use crate::store::{SessionRecord, Store};

/// How long a session lasts from login, whatever its use (a working day and a half).
pub const SESSION_TTL_MS: i64 = 36 * 3600 * 1000;

/// Failed logins allowed in a row before each further attempt must wait.
const FREE_FAILURES: i64 = 3;
/// The longest wait between attempts, however many failed.
const MAX_WAIT_MS: i64 = 5 * 60 * 1000;

/// Passwords shorter than this are refused (NIST SP 800-63B's minimum for chosen ones is 8;
/// this account can run any operation on every site).
const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 1024;

/// A session just opened: the cookie value (shown to the browser only) and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub user: User,
    pub expires_at: Timestamp,
}

/// Why a login was refused. Deliberately the same for an unknown name and a wrong password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    BadCredentials,
    /// Too many failures in a row: the next attempt is accepted after this many seconds.
    Throttled {
        retry_after_secs: i64,
    },
}

/// An account as created, with its password when aegird chose it (shown only this once).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's recommendation).
fn hash_password(password: &str) -> Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| AppError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(format!("password hash: {e}")))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of nothing anyone can type, verified against when the name is unknown so that a
/// login takes as long whether or not the account exists.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&crate::hex::random(32)).unwrap_or_default())
}

fn check_password(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
        return Err(Invalid::new(
            "password",
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"),
        )
        .into());
    }
    if password.chars().any(char::is_control) {
        return Err(Invalid::new("password", "must not contain control characters").into());
    }
    Ok(())
}

/// 24 random characters from an alphabet without look-alikes (about 137 bits).
fn generated_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..24)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Milliseconds the next attempt must still wait after `failures` failures in a row, the
/// last at `last_failed`: none for the first few, then doubling up to [`MAX_WAIT_MS`].
pub fn wait_ms(failures: i64, last_failed: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(last) = last_failed else { return 0 };
    if failures < FREE_FAILURES {
        return 0;
    }
    let exponent = (failures - FREE_FAILURES).min(20) as u32;
    let wait = (1000i64 << exponent).min(MAX_WAIT_MS);
    (last.0 + wait - now.0).max(0)
}

/// Creates an account (used by `aegird user create`). Without a password, one is generated
/// and returned.
pub async fn create_user(
    store: &Store,
    name: &str,
    password: Option<&str>,
    admin: bool,
    now: Timestamp,
) -> Result<CreatedUser> {
    let name = validate::name("name", name)?;
    let (password, generated) = match password {
        Some(p) => {
            check_password(p)?;
            (p.to_string(), false)
        }
        None => (generated_password(), true),
    };
    let hash = hash_blocking(password.clone()).await?;
    let user = store.insert_user(&name, &hash, admin, now).await?;
    Ok(CreatedUser {
        user,
        password: generated.then_some(password),
    })
}

/// Sets an account's password (and ends its sessions); returns the generated one if none
/// was given.
pub async fn set_password(store: &Store, name: &str, password: Option<&str>) -> Result<String> {
    let password = match password {
        Some(p) => {
            check_password(p)?;
            p.to_string()
        }
        None => generated_password(),
    };
    let hash = hash_blocking(password.clone()).await?;
    if !store.set_user_password(name, &hash).await? {
        return Err(AppError::NotFound {
            what: "user",
            key: name.to_string(),
        });
    }
    Ok(password)
}

/// argon2 takes tens of milliseconds of CPU on purpose: off the async workers.
async fn hash_blocking(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AppError::Internal(format!("password hash task: {e}")))?
}

async fn matches_blocking(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || password_matches(&password, &hash))
        .await
        .map_err(|e| AppError::Internal(format!("password check task: {e}")))
}

impl App {
    /// Checks a name and password and opens a session. A throttled account is refused
    /// before its password is even checked, so waiting is the only way forward.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
    ) -> Result<std::result::Result<NewSession, LoginRefused>> {
        let now = self.now();
        let record = if password.len() > MAX_PASSWORD * 4 {
            None
        } else {
            self.store().login_record(name).await?
        };
        let Some(record) = record else {
            matches_blocking(password.to_string(), decoy_hash().to_string()).await?;
            return Ok(Err(LoginRefused::BadCredentials));
        };
        let wait = wait_ms(record.failed_logins, record.last_failed_at, now);
        if wait > 0 {
            return Ok(Err(LoginRefused::Throttled {
                retry_after_secs: (wait + 999) / 1000,
            }));
        }
        if !matches_blocking(password.to_string(), record.password_hash).await? {
            self.store()
                .record_login_failure(record.user.id, now)
                .await?;
            tracing::warn!(user = %record.user.name, "web UI login failed");
            return Ok(Err(LoginRefused::BadCredentials));
        }
        let cookie = crate::hex::random(32);
        let csrf = crate::hex::random(32);
        let expires_at = Timestamp(now.0 + SESSION_TTL_MS);
        self.store()
            .open_session(record.user.id, &token_hash(&cookie), &csrf, now, expires_at)
            .await?;
        tracing::info!(user = %record.user.name, "web UI login");
        Ok(Ok(NewSession {
            cookie,
            csrf,
            user: record.user,
            expires_at,
        }))
    }

    /// The live session a cookie value opens, if any.
    pub async fn session(&self, cookie: &str) -> Result<Option<SessionRecord>> {
        Ok(self
            .store()
            .session(&token_hash(cookie), self.now())
            .await?)
    }

    pub async fn logout(&self, cookie: &str) -> Result<()> {
        Ok(self.store().close_session(&token_hash(cookie)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches("correct horse battery", &hash));
        assert!(!password_matches("correct horse batterY", &hash));
        assert!(!password_matches("correct horse battery", "not a hash"));
    }

    #[test]
    fn failures_wait_longer_and_longer_up_to_a_cap() {
        let t = Timestamp(1_000_000);
        assert_eq!(wait_ms(0, None, t), 0);
        assert_eq!(wait_ms(2, Some(t), t), 0);
        assert_eq!(wait_ms(3, Some(t), t), 1000);
        assert_eq!(wait_ms(4, Some(t), t), 2000);
        assert_eq!(wait_ms(4, Some(t), Timestamp(t.0 + 1500)), 500);
        assert_eq!(wait_ms(4, Some(t), Timestamp(t.0 + 5000)), 0);
        assert_eq!(wait_ms(60, Some(t), t), MAX_WAIT_MS);
    }

    #[test]
    fn short_or_control_passwords_are_refused() {
        assert!(check_password("short").is_err());
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password("twelve\nchars!").is_err());
        let generated = generated_password();
        assert_eq!(generated.len(), 24);
        assert!(check_password(&generated).is_ok());
    }
}
