//! A running aegird: opens the store, starts the engine and the HTTP server, talks to systemd
//! (readiness, watchdog, journald) and shuts down cleanly on SIGTERM.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api;
use crate::app::App;
use crate::backend::{HostPlanner, SshKeys};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::Config;
use crate::engine::{Engine, Planner};
use crate::store::Store;

/// Log to journald when systemd started us with stderr on the journal, else readable lines on
/// stderr. `RUST_LOG` filters either way (default: info).
pub fn init_logging() {
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            if logger.install().is_ok() {
                // tracing events become `log` records when no subscriber is set.
                let level = std::env::var("RUST_LOG")
                    .ok()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(log::LevelFilter::Info);
                log::set_max_level(level);
                return;
            }
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Make the state directory (owner-only: it holds the store and secrets) and open the store.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    ensure_private_dir(&cfg.state_dir)?;
    Store::open(&cfg.database_url).await.with_context(|| {
        format!(
            "cannot open the store ({})",
            crate::config::redact_url(&cfg.database_url)
        )
    })
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    } else {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o007 != 0 {
            tracing::warn!(
                "state directory {} is readable by others (mode {:o}); it holds secrets",
                dir.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// `aegird serve`: run until SIGTERM or SIGINT.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    // Before anything can answer: a SIGTERM that arrives while we start must stop us
    // cleanly, not kill us with the default action.
    let shutdown = shutdown_signal()?;
    let store = open_store(&cfg).await?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "aegird listening on http://{addr}/ (state in {}, store {})",
        cfg.state_dir.display(),
        crate::config::redact_url(&cfg.database_url)
    );
    if !store.has_tokens().await? {
        tracing::info!(
            "no API token exists yet; create one with: aegird token create --name admin --state-dir {}",
            cfg.state_dir.display()
        );
    }
    if !store.has_users().await? {
        first_account(&store, &cfg.state_dir).await?;
    }
    let mut backups = crate::backend::backup::Settings::new(&cfg.backups.dir);
    backups.retention = cfg.backups.retention;
    backups.level = cfg.backups.level;
    let planner: Arc<dyn Planner> = Arc::new(
        HostPlanner::new(&cfg.state_dir)
            .with_releases_dir(cfg.releases_dir.clone())
            .with_backups(backups),
    );
    launch(
        store,
        Arc::new(SystemClock),
        planner,
        &cfg,
        listener,
        shutdown,
    )
    .await
}

/// Run the engine and HTTP server on `listener` until `shutdown` resolves. Tests call this
/// with a listener on port 0 and their own planner and clock.
pub async fn launch(
    store: Store,
    clock: SharedClock,
    planner: Arc<dyn Planner>,
    cfg: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let engine = Engine::new(
        store.clone(),
        clock,
        planner,
        cfg.engine.clone(),
        &cfg.node_name,
    );
    let app = App::new(engine.clone(), SshKeys::new(cfg.state_dir.join("ssh")));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let engine_task = tokio::spawn(engine.run(stopped(stop_rx.clone())));
    let scheduler = tokio::spawn(scheduler_loop(app.clone(), cfg.backups.clone()));
    let http =
        axum::serve(listener, api::router(app)).with_graceful_shutdown(stopped(stop_rx.clone()));
    let http_task = tokio::spawn(async move { http.await });

    notify_ready();
    let watchdog = tokio::spawn(watchdog_loop());
    shutdown.await;
    tracing::info!("shutting down: no new operations are started");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    // The engine's own timeout bounds this; the HTTP server ends when its streams do.
    engine_task.await.context("engine task")?;
    match tokio::time::timeout(Duration::from_secs(5), http_task).await {
        Ok(r) => r.context("http task")??,
        Err(_) => tracing::warn!("HTTP connections still open after 5 s; closing them"),
    }
    watchdog.abort();
    scheduler.abort();
    SshKeys::new(cfg.state_dir.join("ssh"))
        .close_connections()
        .await;
    store.close().await;
    tracing::info!("aegird stopped");
    Ok(())
}

/// aegird's own scheduler (Aegir 3 needed cron for this): queues a backup for every
/// environment that is due. The store decides what is due, so a restart loses nothing.
async fn scheduler_loop(app: App, cfg: crate::config::BackupsConfig) {
    if cfg.interval == 0 {
        tracing::info!("scheduled backups are off unless an environment sets its own interval");
    }
    let mut tick = tokio::time::interval(cfg.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match app.queue_scheduled_backups(cfg.interval).await {
            Ok(ops) => {
                for op in ops {
                    tracing::info!(operation = op.id, environment = %op.target.name, "scheduled backup queued");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot queue scheduled backups"),
        }
    }
}

fn notify_ready() {
    // A no-op unless systemd set NOTIFY_SOCKET.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
}

/// Ping systemd's watchdog at half its interval, when it has one.
async fn watchdog_loop() {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    loop {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        tokio::time::sleep(every).await;
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on either signal.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Where the first start leaves the first account's password.
pub fn initial_password_file(state_dir: &Path) -> PathBuf {
    state_dir.join("initial-admin-password")
}

/// On a store without accounts, creates `admin` with a generated password and leaves the
/// password in a file only root and aegird can read (not in the log, which the journal keeps
/// for others to read): the web UI is usable from the first start, with no default password.
async fn first_account(store: &Store, state_dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let created =
        match crate::accounts::create_user(store, "admin", None, true, SystemClock.now()).await {
            Ok(created) => created,
            // Another daemon sharing this store made it first: its state directory has the file.
            Err(crate::app::AppError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e).context("cannot create the first web UI account"),
        };
    let password = created.password.unwrap_or_default();
    let path = initial_password_file(state_dir);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{password}"));
    if let Err(e) = written {
        // No file, no way in: take the account back so the next start tries again.
        store.delete_user("admin").await?;
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    tracing::info!(
        "web UI: log in as admin with the password in {} (it goes away with `aegird user passwd admin`)",
        path.display()
    );
    Ok(())
}
