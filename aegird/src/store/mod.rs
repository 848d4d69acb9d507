//! The store: the only source of truth and the only module that speaks SQL.
//!
//! One set of queries serves SQLite (the default) and PostgreSQL through sqlx's `Any` driver:
//! the schema keeps to types both engines share (BIGINT, TEXT; times as integer
//! milliseconds, JSON as text) and each engine has its own migrations. Where the engines
//! differ (claiming work across several daemons) the code branches on [`Engine`].

pub mod imports;
mod inventory;
mod operations;
mod tokens;
mod upgrade;
mod users;

pub use inventory::{NewBackupRow, NewEnvironmentRow, NewReleaseRow, NewServerRow};
pub use operations::{CancelOutcome, OperationFilter, RecoveryCandidate};
pub use users::{LoginRecord, SessionRecord};

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use crate::model::{Timestamp, UnknownVariant};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique constraint refused the write: the thing already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// A row holds a value the code does not know: the store was written by something else.
    #[error("store holds an unexpected value: {0}")]
    Corrupt(String),
}

impl From<UnknownVariant> for StoreError {
    fn from(e: UnknownVariant) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(format!("bad JSON column: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine)
            .finish()
    }
}

impl Store {
    /// Open the store at `url` and apply any pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            Engine::Postgres
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = match engine {
            Engine::Sqlite => {
                AnyPoolOptions::new()
                    // SQLite has one writer; a few readers are enough and keep memory small.
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers go on while the engine writes; the busy timeout
                            // makes a second writer wait instead of failing at once.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                                 PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Engine::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?
            }
        };
        match (engine, upgrade::sqlite_path(url)) {
            // An upgrade of a SQLite store sets a copy aside first and puts it back on failure.
            (Engine::Sqlite, Some(path)) => {
                upgrade::migrate(&pool, &path, &SQLITE_MIGRATIONS).await?;
            }
            (Engine::Sqlite, None) => SQLITE_MIGRATIONS.run(&pool).await?,
            // PostgreSQL runs each migration in a transaction; its backups are the DBA's.
            (Engine::Postgres, _) => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, engine })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Rows per table, for tests that check a refused request changed nothing.
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>> {
        let mut out = Vec::new();
        for table in [
            "servers",
            "clusters",
            "projects",
            "releases",
            "environments",
            "operations",
            "tasks",
            "task_logs",
            "backups",
            "api_tokens",
            "users",
            "sessions",
        ] {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
            out.push((table, n));
        }
        Ok(out)
    }
}

/// Maps a unique-constraint failure to [`StoreError::Conflict`] with a readable subject.
fn conflict_or(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
        _ => StoreError::Db(e),
    }
}

fn ts(row: &AnyRow, col: &str) -> Result<Timestamp> {
    Ok(Timestamp(row.try_get::<i64, _>(col)?))
}

fn opt_ts(row: &AnyRow, col: &str) -> Result<Option<Timestamp>> {
    Ok(row.try_get::<Option<i64>, _>(col)?.map(Timestamp))
}

fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

fn parse<T: FromStr<Err = UnknownVariant>>(row: &AnyRow, col: &str) -> Result<T> {
    Ok(row.try_get::<String, _>(col)?.parse::<T>()?)
}

fn json<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T> {
    Ok(serde_json::from_str(&row.try_get::<String, _>(col)?)?)
}

/// A nullable JSON column.
fn opt_json<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<Option<T>> {
    row.try_get::<Option<String>, _>(col)?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(Into::into)
}
