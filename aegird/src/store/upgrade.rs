//! Upgrading a SQLite store safely: a consistent copy is set aside before pending migrations
//! run, and put back if one of them fails, so a failed upgrade leaves the store as it was.

use std::path::{Path, PathBuf};

use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

use super::Result;

/// The store file a SQLite URL names, or None for an in-memory store.
pub(super) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Versions of the migrations already applied, or none for a new store.
async fn applied(pool: &AnyPool) -> Result<Vec<i64>> {
    let exists: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?
    .try_get("n")?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>("version").map_err(Into::into))
        .collect()
}

/// Applies `migrator` to the store at `path`. When the store already has data and migrations
/// are pending, it first writes `<file>.before-<version>` (SQLite's `VACUUM INTO`: consistent
/// even while WAL holds recent writes), and if a migration fails it closes the pool and puts
/// that copy back before returning the error. Returns the copy's path when one was made.
pub(super) async fn migrate(
    pool: &AnyPool,
    path: &Path,
    migrator: &Migrator,
) -> Result<Option<PathBuf>> {
    let done = applied(pool).await?;
    let first_pending = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .find(|v| !done.contains(v));
    let copy = match first_pending {
        // A new store has nothing to lose, and an up-to-date one nothing to change.
        Some(version) if !done.is_empty() => Some(set_aside(pool, path, version).await?),
        _ => None,
    };
    match migrator.run(pool).await {
        Ok(()) => {
            if let Some(copy) = &copy {
                tracing::info!(
                    "store migrated; the store as it was before is kept at {}",
                    copy.display()
                );
            }
            Ok(copy)
        }
        Err(error) => {
            if let Some(copy) = &copy {
                pool.close().await;
                put_back(copy, path)?;
                tracing::error!(
                    "store migration failed; the store was put back as it was from {}",
                    copy.display()
                );
            }
            Err(error.into())
        }
    }
}

async fn set_aside(pool: &AnyPool, path: &Path, version: i64) -> Result<PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| "aegir.db".into());
    let copy = path.with_file_name(format!("{name}.before-{version:04}"));
    let partial = path.with_file_name(format!("{name}.before-{version:04}.partial"));
    // VACUUM INTO refuses an existing file: a copy left by an earlier, interrupted attempt
    // is of the same store (a failed attempt put it back), so it is made again.
    for stale in [&partial, &copy] {
        remove_if_present(stale)?;
    }
    let quoted = partial.to_string_lossy().replace('\'', "''");
    sqlx::query(&format!("VACUUM INTO '{quoted}'"))
        .execute(pool)
        .await?;
    {
        use std::os::unix::fs::PermissionsExt;
        // The store holds secrets; the copy is as private as the store.
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error)?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_error)?;
    }
    std::fs::rename(&partial, &copy).map_err(io_error)?;
    Ok(copy)
}

/// Puts the copy back in place of the store, dropping the failed attempt's WAL files. The
/// copy is copied to a temporary name and renamed over the store: a connection of the failed
/// attempt that is still closing keeps the old file (and its locks), never a half-written one.
fn put_back(copy: &Path, path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let partial = path.with_file_name(format!("{name}.restoring"));
    std::fs::copy(copy, &partial).map_err(io_error)?;
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io_error)?;
    for suffix in ["-wal", "-shm"] {
        remove_if_present(&path.with_file_name(format!("{name}{suffix}")))?;
    }
    std::fs::rename(&partial, path).map_err(io_error)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(e)),
        _ => Ok(()),
    }
}

fn io_error(e: std::io::Error) -> super::StoreError {
    super::StoreError::Db(sqlx::Error::Io(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::any::AnyPoolOptions;
    use sqlx::migrate::Migration;
    use std::borrow::Cow;

    fn migrator(migrations: Vec<Migration>) -> Migrator {
        Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        }
    }

    async fn pool(path: &Path) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(2)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL;").await?;
                    Ok(())
                })
            })
            .connect(&crate::config::sqlite_url(path))
            .await
            .unwrap()
    }

    async fn versions(pool: &AnyPool) -> Vec<i64> {
        let mut v = applied(pool).await.unwrap();
        v.sort();
        v
    }

    /// The real migrations up to `upto`, then the store gets a server row in that schema.
    async fn old_store(path: &Path, upto: i64) -> Vec<Migration> {
        let all: Vec<Migration> = super::super::SQLITE_MIGRATIONS.iter().cloned().collect();
        let old: Vec<Migration> = all.iter().filter(|m| m.version <= upto).cloned().collect();
        let p = pool(path).await;
        migrator(old).run(&p).await.unwrap();
        sqlx::query(
            "INSERT INTO servers (name, transport, status, created_at, updated_at) \
             VALUES ('old-server', 'local', 'new', 1, 1)",
        )
        .execute(&p)
        .await
        .unwrap();
        p.close().await;
        all
    }

    async fn server_names(pool: &AnyPool) -> Vec<String> {
        sqlx::query("SELECT name FROM servers")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get("name").unwrap())
            .collect()
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/aegir/aegir.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/aegir/aegir.db"))
        );
        assert_eq!(sqlite_path("sqlite:rel.db"), Some(PathBuf::from("rel.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }

    #[tokio::test]
    async fn an_upgrade_keeps_a_copy_and_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegir.db");
        let all = old_store(&path, 4).await;
        let p = pool(&path).await;
        let copy = migrate(&p, &path, &migrator(all.clone())).await.unwrap();
        let copy = copy.expect("a store with data that needed migrating is copied first");
        assert_eq!(copy, dir.path().join("aegir.db.before-0005"));
        assert_eq!(
            versions(&p).await,
            all.iter().map(|m| m.version).collect::<Vec<_>>()
        );
        assert_eq!(server_names(&p).await, ["old-server"]);
        let old = pool(&copy).await;
        assert_eq!(versions(&old).await, [1, 2, 3, 4]);
        assert_eq!(server_names(&old).await, ["old-server"]);
        // Up to date: nothing to copy the second time.
        assert_eq!(migrate(&p, &path, &migrator(all)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_new_store_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegir.db");
        let p = pool(&path).await;
        let all: Vec<Migration> = super::super::SQLITE_MIGRATIONS.iter().cloned().collect();
        assert_eq!(migrate(&p, &path, &migrator(all)).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "db, -wal, -shm only"
        );
    }

    #[tokio::test]
    async fn a_failed_migration_puts_the_store_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegir.db");
        let mut all = old_store(&path, 3).await;
        // Migration 4 applies, then a broken one fails: the store must be back at 3.
        all.retain(|m| m.version <= 4);
        all.push(Migration::new(
            4999,
            Cow::Borrowed("broken"),
            sqlx::migrate::MigrationType::Simple,
            Cow::Borrowed("ALTER TABLE no_such_table ADD COLUMN x TEXT"),
            false,
        ));
        let p = pool(&path).await;
        let error = migrate(&p, &path, &migrator(all)).await.unwrap_err();
        assert!(error.to_string().contains("migration"), "{error}");
        let p = pool(&path).await;
        assert_eq!(versions(&p).await, [1, 2, 3]);
        assert_eq!(server_names(&p).await, ["old-server"]);
    }
}
