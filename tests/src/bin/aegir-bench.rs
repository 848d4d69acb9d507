//! `aegir-bench`: measures aegird and prints each figure beside a baseline measured in the same run.
//!
//! `aegir-bench engine` measures three things (see docs/benchmarks.md):
//! 1. the operations engine's queue latency and throughput on SQLite and on PostgreSQL, against
//!    the bare store calls any queue needs (enqueue, claim, finish);
//! 2. the resident memory of an idle `aegird` holding 10,000 environments, against one with an
//!    empty store;
//! 3. the latency of `GET /api/v1/environments` over those 10,000 rows, against `GET /healthz`
//!    on the same keep-alive connection and against the same store call made in-process.
//!
//! `aegir-bench site` measures one WordPress environment install and delete through the CLI
//! (`aegir env create --wait`, `aegir env delete --wait`) against the same work done by hand
//! with a shell script: database and user, per-site config, vhost with `nginx -t` and a reload,
//! WordPress's own `wp_install` (the floor any tool has to pay).
//!
//! `aegir-bench backup` builds a WordPress-shaped site (rows over several tables, files half
//! compressible text and half incompressible like JPEGs) and measures, in one run, Aegir 3's
//! backup (`mysqldump` into the site directory, then `tar czf`) and restore (`tar xzf`, then
//! `mysql` import) against `aegir env backup --wait` and `aegir env restore --wait`.
//!
//! `aegir-bench web` measures the web UI's server-side render time over a store of 10,000
//! environments (the environment list, a page deep in it, a search, the dashboard), through
//! the router in-process, against the JSON API's answer for the same rows.
//!
//! `aegir-bench import` loads the shared Aegir 3 fixture plus generated sites (1,000 by
//! default) and measures `aegir import aegir3` (dry run, first import, a second one that
//! finds nothing changed) against reading the same data raw: the hostmaster database dumped
//! and every file under the Aegir root read.
//!
//! Every loop has a fixed count or a deadline, and all traffic stays on the loopback.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegir_tests::{Backend, Daemon, DaemonOpts, TestDb};
use aegird::clock::{Clock, SystemClock};
use aegird::config::EngineConfig;
use aegird::engine::{
    Engine, OperationSpec, Plan, PlanError, Planner, Step, StepContext, StepError,
};
use aegird::model::{
    EnvironmentStatus, HttpsMode, Id, OperationKind, OperationStatus, ProjectSource, TargetRef,
    TargetType, Timestamp,
};
use aegird::store::{NewEnvironmentRow, NewReleaseRow, NewServerRow, OperationFilter, Store};
use anyhow::{bail, ensure, Context, Result};
use async_trait::async_trait;
use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(Debug, Parser)]
#[command(
    name = "aegir-bench",
    about = "Benchmarks of aegird; each figure is printed beside a baseline measured in the \
        same run, with their ratio",
    after_help = "Normally run through `cargo xtask bench engine [--quick]`, which builds in \
        release mode and makes sure PostgreSQL runs (AEGIR_TEST_POSTGRES_URL)."
)]
struct Cli {
    #[command(subcommand)]
    bench: BenchCmd,
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Queue latency and throughput (SQLite and PostgreSQL), idle memory and list latency of
    /// a daemon with 10,000 environments.
    Engine {
        /// Fewer samples: a smoke run, not figures to quote.
        #[arg(long)]
        quick: bool,
    },
    /// Install and delete of one WordPress environment through the CLI, on this machine's
    /// nginx, php-fpm and MariaDB, against the same work done by hand.
    Site {
        /// Fewer rounds: a smoke run, not figures to quote.
        #[arg(long)]
        quick: bool,
    },
    /// Server-side render time of the web UI's pages over 10,000 environments, against the
    /// JSON API for the same rows.
    Web {
        /// Fewer samples: a smoke run, not figures to quote.
        #[arg(long)]
        quick: bool,
    },
    /// `aegir import aegir3` of the shared fixture plus generated sites, against reading the
    /// same hostmaster database and files raw.
    Import {
        /// One round of 100 sites: a smoke run.
        #[arg(long)]
        quick: bool,
        /// Sites generated beside the fixture's (default 1000).
        #[arg(long)]
        sites: Option<usize>,
    },
    /// Backup and restore of a WordPress-shaped site, against Aegir 3's way.
    Backup {
        /// A small site (64 MiB of rows, 64 MiB of files): a smoke run.
        #[arg(long)]
        quick: bool,
        /// MiB of database rows (default 1024).
        #[arg(long)]
        db_mib: Option<u64>,
        /// MiB of files, half text, half incompressible (default 1024).
        #[arg(long)]
        files_mib: Option<u64>,
    },
}

/// How many samples each measurement takes.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Operations queued one at a time for the latency percentiles.
    latency_ops: usize,
    /// Operations queued at once for the throughput figure.
    throughput_ops: usize,
    /// HTTP requests per endpoint.
    http_requests: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                latency_ops: 50,
                throughput_ops: 300,
                http_requests: 50,
            }
        } else {
            Sizes {
                latency_ops: 200,
                throughput_ops: 2000,
                http_requests: 200,
            }
        }
    }
}

/// Unmeasured rounds before each series: connections opened, statements prepared, caches warm.
const WARMUP: usize = 10;
/// Servers the operations are spread over: mutating operations on one target run one at a
/// time by design, and the benchmark is about the queue, not about that rule.
const SERVERS: usize = 250;
/// Throughput rounds per store engine (the median is reported).
const ROUNDS: usize = 3;
/// Environments in the daemon's store for the memory and API measurements.
const ENVIRONMENTS: usize = 10_000;

/// The engine settings of a default daemon, but a short shutdown grace.
fn engine_config() -> EngineConfig {
    EngineConfig {
        concurrency: 4,
        lease: Duration::from_secs(30),
        shutdown_timeout: Duration::from_secs(5),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match cli.bench {
        BenchCmd::Engine { quick } => runtime.block_on(engine_bench(Sizes::new(quick))),
        BenchCmd::Site { quick } => site_bench(if quick { 2 } else { 7 }),
        BenchCmd::Web { quick } => runtime.block_on(web_bench(if quick { 50 } else { 300 })),
        BenchCmd::Import { quick, sites } => import_bench(
            sites.unwrap_or(if quick { 100 } else { 1000 }),
            if quick { 1 } else { 3 },
        ),
        BenchCmd::Backup {
            quick,
            db_mib,
            files_mib,
        } => {
            let default = if quick { 64 } else { 1024 };
            backup_bench(db_mib.unwrap_or(default), files_mib.unwrap_or(default))
        }
    }
}

// --- results

#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Millis,
    OpsPerSec,
    MiB,
    Secs,
}

/// One line of the results table.
struct Row {
    what: String,
    value: f64,
    baseline_what: String,
    baseline: f64,
    unit: Unit,
}

impl Row {
    fn new(
        what: impl Into<String>,
        value: f64,
        baseline_what: impl Into<String>,
        baseline: f64,
        unit: Unit,
    ) -> Row {
        Row {
            what: what.into(),
            value,
            baseline_what: baseline_what.into(),
            baseline,
            unit,
        }
    }
}

fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Millis if v < 1.0 => format!("{v:.3} ms"),
        Unit::Millis if v < 10.0 => format!("{v:.2} ms"),
        Unit::Millis => format!("{v:.1} ms"),
        Unit::OpsPerSec => format!("{v:.0} ops/s"),
        Unit::MiB => format!("{v:.1} MiB"),
        Unit::Secs => format!("{v:.1} s"),
    }
}

fn print_table(rows: &[Row]) {
    println!("| measurement | figure | baseline | baseline figure | ratio |");
    println!("|---|---:|---|---:|---:|");
    for r in rows {
        let ratio = if r.baseline > 0.0 {
            format!("{:.2}×", r.value / r.baseline)
        } else {
            "n/a".into()
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.what,
            fmt_value(r.value, r.unit),
            r.baseline_what,
            fmt_value(r.baseline, r.unit),
            ratio
        );
    }
    println!();
    println!(
        "ratio = figure ÷ baseline: for latency and memory, how many times the baseline it \
         costs; for throughput, the share of the baseline's rate it reaches."
    );
}

/// Nearest-rank percentile, in milliseconds.
fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    assert!(!samples.is_empty(), "no samples");
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// p50 and p99 of a series and of its baseline, as two rows.
fn latency_rows(
    rows: &mut Vec<Row>,
    what: &str,
    samples: &[Duration],
    baseline_what: &str,
    baseline: &[Duration],
) {
    for p in [50.0, 99.0] {
        rows.push(Row::new(
            format!("{what}, p{p:.0}"),
            percentile_ms(samples, p),
            format!("{baseline_what}, p{p:.0}"),
            percentile_ms(baseline, p),
            Unit::Millis,
        ));
    }
}

fn progress(msg: &str) {
    eprintln!("aegir-bench: {msg}");
}

// --- the whole run

async fn engine_bench(sizes: Sizes) -> Result<()> {
    // Build (or find) the daemon first, so no measurement waits for cargo.
    let aegird = tokio::task::spawn_blocking(|| aegir_tests::bin("aegird")).await?;
    let facts = machine_facts(&aegird).await?;
    println!("# aegir-bench engine");
    println!();
    for (k, v) in &facts {
        println!("- {k}: {v}");
    }
    println!(
        "- samples: {} operations for latency, {} for throughput (over {SERVERS} servers), \
         {} requests per endpoint, {WARMUP} warm-up rounds before each series",
        sizes.latency_ops, sizes.throughput_ops, sizes.http_requests
    );
    println!();

    let mut rows = Vec::new();
    for (backend, label) in [
        (Backend::Sqlite, "SQLite"),
        (Backend::Postgres, "PostgreSQL"),
    ] {
        queue_bench(backend, label, sizes, &mut rows).await?;
    }
    daemon_bench(sizes, &mut rows).await?;

    print_table(&rows);
    println!();
    println!(
        "- load average (1, 5, 15 min) at the end: {}",
        load_average()
    );
    Ok(())
}

/// The machine's load: other work on it skews figures (the ratios less so).
/// CPU seconds a process has used, and those of its children it has waited for
/// (`/proc/PID/stat` utime + stime, cutime + cstime), or None if it cannot be read.
fn cpu_secs(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime, stime, cutime, cstime are fields 14-17 of the line, 12-15 after the name.
    Some((
        (f.get(11)? + f.get(12)?) / tick,
        (f.get(13)? + f.get(14)?) / tick,
    ))
}

/// CPU seconds of mariadbd and of aegird (with its children), read at one moment.
type CpuPair = (Option<(f64, f64)>, Option<(f64, f64)>);

/// The running mariadbd's pid.
fn mariadbd_pid() -> Option<u32> {
    let out = Command::new("pidof").arg("mariadbd").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lines of "what this ran on", printed above the table.
async fn machine_facts(aegird: &Path) -> Result<Vec<(&'static str, String)>> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':').or_else(|| l.split_once('=')))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = field(&read("/proc/cpuinfo"), "model name");
    let mem_kib: f64 = field(&read("/proc/meminfo"), "MemTotal")
        .trim_end_matches(" kB")
        .parse()
        .unwrap_or(0.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let os = field(&read("/etc/os-release"), "PRETTY_NAME");
    let version = Command::new(aegird)
        .arg("--version")
        .output()
        .context("cannot run aegird --version")?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());

    sqlx::any::install_default_drivers();
    let sqlite_version: String = {
        use sqlx::{Connection, Row};
        let mut c = sqlx::AnyConnection::connect("sqlite::memory:").await?;
        sqlx::query("SELECT sqlite_version() AS v")
            .fetch_one(&mut c)
            .await?
            .try_get("v")?
    };
    let pg_url = aegir_tests::postgres_url();
    let pg_version: String = {
        use sqlx::{Connection, Row};
        let mut c = sqlx::AnyConnection::connect(&pg_url)
            .await
            .with_context(|| {
                format!(
                    "PostgreSQL at {pg_url} is needed (`cargo xtask bench engine` starts it; \
                 AEGIR_TEST_POSTGRES_URL points elsewhere)"
                )
            })?;
        let v: String = sqlx::query("SHOW server_version")
            .fetch_one(&mut c)
            .await?
            .try_get(0)?;
        let sync: String = sqlx::query("SHOW synchronous_commit")
            .fetch_one(&mut c)
            .await?
            .try_get(0)?;
        format!("{v} (synchronous_commit={sync}), over TCP on the loopback")
    };

    Ok(vec![
        ("date", SystemClock.now().to_rfc3339()),
        ("command", std::env::args().collect::<Vec<_>>().join(" ")),
        ("cpu", format!("{cpus} × {model}")),
        ("memory", format!("{:.1} GiB", mem_kib / 1024.0 / 1024.0)),
        ("kernel", format!("Linux {kernel} ({os})")),
        ("aegird", format!("{version}, commit {commit}")),
        (
            "SQLite",
            format!("{sqlite_version} (WAL, synchronous=NORMAL), file on the local disk"),
        ),
        ("PostgreSQL", pg_version),
        ("load average (1, 5, 15 min) at the start", load_average()),
    ])
}

// --- 1. the queue

/// Plans every operation as one no-op step that reports when it starts.
struct NoopPlanner {
    started: mpsc::UnboundedSender<(Id, Instant)>,
}

#[async_trait]
impl Planner for NoopPlanner {
    async fn plan(
        &self,
        _store: &Store,
        _spec: &OperationSpec,
    ) -> std::result::Result<Plan, PlanError> {
        Ok(Plan {
            steps: vec![Arc::new(NoopStep {
                started: self.started.clone(),
            })],
            resumable: true,
            on_failure: None,
        })
    }
}

struct NoopStep {
    started: mpsc::UnboundedSender<(Id, Instant)>,
}

#[async_trait]
impl Step for NoopStep {
    fn name(&self) -> &str {
        "noop"
    }

    async fn run(&self, cx: &StepContext) -> std::result::Result<serde_json::Value, StepError> {
        // Nobody listening (the throughput run) is fine.
        let _ = self.started.send((cx.operation_id, Instant::now()));
        Ok(serde_json::Value::Null)
    }
}

/// An engine running on its own task over `store`, stopped by [`RunningEngine::stop`].
struct RunningEngine {
    engine: Engine,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningEngine {
    fn start(store: &Store, started: mpsc::UnboundedSender<(Id, Instant)>) -> RunningEngine {
        let engine = Engine::new(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(NoopPlanner { started }),
            engine_config(),
            "bench",
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(engine.clone().run(async move {
            let _ = stopped.await;
        }));
        RunningEngine { engine, stop, task }
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the engine did not stop within 30 s")??;
        Ok(())
    }
}

/// A fresh store on `backend` with [`SERVERS`] servers to target.
async fn fresh_store(backend: Backend) -> Result<(TestDb, Vec<TargetRef>)> {
    let db = TestDb::new(backend).await;
    let now = SystemClock.now();
    let mut targets = Vec::with_capacity(SERVERS);
    for i in 0..SERVERS {
        let row = NewServerRow::local(format!("bench-{i:04}"));
        let s = db.store.insert_server(&row, now).await?;
        targets.push(TargetRef {
            target_type: TargetType::Server,
            id: s.id,
            name: s.name,
        });
    }
    Ok((db, targets))
}

/// The store calls one operation needs at the least, as any queue on this store would make
/// them: queue it with its task, claim it, and (for throughput) mark it done.
async fn bare_round_trip(store: &Store, target: &TargetRef, finish: bool) -> Result<Duration> {
    const OWNER: &str = "bench/bare";
    let names = ["noop".to_string()];
    let t0 = Instant::now();
    let now = SystemClock.now();
    let op = store
        .enqueue_operation(
            OperationKind::ServerVerify,
            target,
            &json!({}),
            None,
            &names,
            now,
        )
        .await?;
    let claimed = store
        .claim_next(OWNER, now.plus_ms(30_000), now)
        .await?
        .context("claim_next found nothing right after an enqueue")?;
    ensure!(
        claimed.id == op.id,
        "claimed {} instead of {}",
        claimed.id,
        op.id
    );
    let elapsed = t0.elapsed();
    let changed = store
        .finish_operation(
            op.id,
            OWNER,
            OperationStatus::Succeeded,
            None,
            SystemClock.now(),
        )
        .await?;
    ensure!(changed, "operation {} was not ours to finish", op.id);
    // Latency stops at the claim; throughput counts the finish too.
    Ok(if finish { t0.elapsed() } else { elapsed })
}

async fn queue_bench(
    backend: Backend,
    label: &str,
    sizes: Sizes,
    rows: &mut Vec<Row>,
) -> Result<()> {
    // (a) Latency, one operation at a time. A bare sample and an engine sample alternate,
    // each on a store of its own, so whatever else the machine does hits both alike.
    progress(&format!(
        "{label}: queue latency (bare store calls and engine, alternating)"
    ));
    let (bare_db, bare_targets) = fresh_store(backend).await?;
    let (db, targets) = fresh_store(backend).await?;
    let (tx, mut started) = mpsc::unbounded_channel();
    let running = RunningEngine::start(&db.store, tx);
    let mut events = running.engine.subscribe();
    let mut bare_latency = Vec::with_capacity(sizes.latency_ops);
    let mut engine_latency = Vec::with_capacity(sizes.latency_ops);
    for i in 0..WARMUP + sizes.latency_ops {
        // A pause before each sample lets the engine settle (its claim that finds nothing
        // after the last operation), so every operation meets an idle queue.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let bare = bare_round_trip(&bare_db.store, &bare_targets[i % SERVERS], false).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t0 = Instant::now();
        let op = running
            .engine
            .enqueue(
                OperationKind::ServerVerify,
                targets[i % SERVERS].clone(),
                json!({}),
                None,
            )
            .await?;
        let (id, at) = tokio::time::timeout(Duration::from_secs(10), started.recv())
            .await
            .with_context(|| format!("operation {} did not start within 10 s", op.id))?
            .context("the engine dropped its planner")?;
        ensure!(id == op.id, "operation {id} started, expected {}", op.id);
        if i >= WARMUP {
            bare_latency.push(bare);
            engine_latency.push(at.duration_since(t0));
        }
        wait_finished(&mut events, &db.store, op.id).await?;
    }
    running.stop().await?;
    drop((db, bare_db));
    latency_rows(
        rows,
        &format!("{label}: queued → running (engine.enqueue to step start)"),
        &engine_latency,
        "store.enqueue_operation + claim_next",
        &bare_latency,
    );

    // (b) Throughput, all operations queued at once. Rounds alternate between the two, each
    // on a fresh store, and the median round of each is reported.
    let mut bare_rates = Vec::with_capacity(ROUNDS);
    let mut engine_rates = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        progress(&format!("{label}: throughput, round {round} of {ROUNDS}"));
        bare_rates.push(bare_throughput(backend, sizes).await?);
        engine_rates.push(engine_throughput(backend, sizes).await?);
        progress(&format!(
            "{label}: {:.0} ops/s through the engine, {:.0} ops/s through bare store calls",
            engine_rates[round - 1],
            bare_rates[round - 1]
        ));
    }
    rows.push(Row::new(
        format!(
            "{label}: throughput, {} no-op operations queued at once (median of {ROUNDS})",
            sizes.throughput_ops
        ),
        median(&mut engine_rates),
        "enqueue_operation + claim_next + finish_operation in a loop",
        median(&mut bare_rates),
        Unit::OpsPerSec,
    ));
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Operations per second through bare store calls, one after the other.
async fn bare_throughput(backend: Backend, sizes: Sizes) -> Result<f64> {
    let (db, targets) = fresh_store(backend).await?;
    for i in 0..WARMUP {
        bare_round_trip(&db.store, &targets[i % SERVERS], true).await?;
    }
    let t0 = Instant::now();
    for i in 0..sizes.throughput_ops {
        bare_round_trip(&db.store, &targets[i % SERVERS], true).await?;
    }
    Ok(sizes.throughput_ops as f64 / t0.elapsed().as_secs_f64())
}

/// Operations per second through the engine, from the first enqueue until all succeeded.
async fn engine_throughput(backend: Backend, sizes: Sizes) -> Result<f64> {
    let (db, targets) = fresh_store(backend).await?;
    let (tx, started) = mpsc::unbounded_channel();
    drop(started);
    let running = RunningEngine::start(&db.store, tx);
    let mut events = running.engine.subscribe();
    for target in targets.iter().take(WARMUP) {
        let op = running
            .engine
            .enqueue(OperationKind::ServerVerify, target.clone(), json!({}), None)
            .await?;
        wait_finished(&mut events, &db.store, op.id).await?;
    }
    drop(events);
    let t0 = Instant::now();
    for i in 0..sizes.throughput_ops {
        running
            .engine
            .enqueue(
                OperationKind::ServerVerify,
                targets[i % SERVERS].clone(),
                json!({}),
                None,
            )
            .await?;
    }
    let want = (WARMUP + sizes.throughput_ops) as i64;
    let deadline = t0 + Duration::from_secs(600);
    loop {
        let done = count(&db.store, OperationStatus::Succeeded).await?;
        if done == want {
            break;
        }
        let failed = count(&db.store, OperationStatus::Failed).await?;
        ensure!(failed == 0, "{failed} operations failed");
        if Instant::now() > deadline {
            bail!("only {done} of {want} operations succeeded within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t0.elapsed();
    running.stop().await?;
    Ok(sizes.throughput_ops as f64 / elapsed.as_secs_f64())
}

async fn count(store: &Store, status: OperationStatus) -> Result<i64> {
    let page = store
        .list_operations(&OperationFilter {
            status: Some(status),
            limit: 1,
            ..Default::default()
        })
        .await?;
    Ok(page.total)
}

/// Wait until operation `id` has ended, and check that it succeeded.
async fn wait_finished(events: &mut broadcast::Receiver<Id>, store: &Store, id: Id) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let op = store
            .operation(id)
            .await?
            .with_context(|| format!("operation {id} vanished"))?;
        if op.status.is_final() {
            ensure!(
                op.status == OperationStatus::Succeeded,
                "operation {id} ended {}: {:?}",
                op.status,
                op.error
            );
            return Ok(());
        }
        // Wait for news of this operation (or a lag, after which we look again).
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(!left.is_zero(), "operation {id} did not end within 10 s");
            match tokio::time::timeout(left, events.recv()).await {
                Ok(Ok(changed)) if changed != id => continue,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(broadcast::error::RecvError::Closed)) => bail!("the engine stopped"),
                Err(_) => bail!("operation {id} did not end within 10 s"),
            }
        }
    }
}

// --- 2. and 3. a real daemon with 10,000 environments

async fn daemon_bench(sizes: Sizes, rows: &mut Vec<Row>) -> Result<()> {
    progress("idle aegird with an empty store");
    let empty_dir = tempfile::tempdir()?;
    let empty_rss = {
        let state = empty_dir.path().to_path_buf();
        let daemon = blocking(move || Daemon::start(&state, &DaemonOpts::default())).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_mib(daemon.child.id())?
    };

    progress(&format!("seeding a store with {ENVIRONMENTS} environments"));
    let full_dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    seed_environments(full_dir.path()).await?;
    progress(&format!("seeded in {:.1} s", t0.elapsed().as_secs_f64()));

    progress(&format!("idle aegird with {ENVIRONMENTS} environments"));
    let state = full_dir.path().to_path_buf();
    let daemon = blocking(move || Daemon::start(&state, &DaemonOpts::default())).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full_rss = rss_mib(daemon.child.id())?;
    rows.push(Row::new(
        format!("aegird idle RSS, {ENVIRONMENTS} environments (SQLite)"),
        full_rss,
        "aegird idle RSS, empty store",
        empty_rss,
        Unit::MiB,
    ));

    progress("GET /api/v1/environments");
    let daemon = Arc::new(daemon);
    let d = daemon.clone();
    let token = blocking(move || d.token("bench", None)).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = daemon.url();
    let n = sizes.http_requests;

    // The floor first, then each list, each on the same kept-alive connection.
    let health = http_series(&client, &format!("{base}/healthz"), None, n).await?;
    // The cheapest authenticated route (one server): the floor plus the token check.
    let authed = http_series(&client, &format!("{base}/api/v1/servers"), Some(&token), n).await?;
    let (page, body) = http_series_checked(
        &client,
        &format!("{base}/api/v1/environments"),
        &token,
        n,
        100,
        ENVIRONMENTS,
    )
    .await?;
    let (big, big_body) = http_series_checked(
        &client,
        &format!("{base}/api/v1/environments?limit=1000"),
        &token,
        n,
        1000,
        ENVIRONMENTS,
    )
    .await?;
    let (search, _) = http_series_checked(
        &client,
        &format!("{base}/api/v1/environments?q=site-0999"),
        &token,
        n,
        10,
        10,
    )
    .await?;
    let after_rss = rss_mib(daemon.child.id())?;

    // The same three lists as in-process store calls on the daemon's own file, to tell the
    // query's share from that of HTTP, authentication and JSON.
    progress("store.list_environments in-process");
    let store = Store::open(&aegird::config::sqlite_url(
        &full_dir.path().join("aegir.db"),
    ))
    .await?;
    let mut direct: Vec<Vec<Duration>> = Vec::new();
    for (search, limit) in [(None, 100), (None, 1000), (Some("site-0999"), 100)] {
        let mut samples = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t0 = Instant::now();
            let page = store.list_environments(search, limit, 0).await?;
            let dt = t0.elapsed();
            ensure!(
                !page.items.is_empty(),
                "store.list_environments found nothing"
            );
            if i >= WARMUP {
                samples.push(dt);
            }
        }
        direct.push(samples);
    }
    store.close().await;
    progress(&format!(
        "response sizes: default page {} KiB, limit=1000 {} KiB",
        body / 1024,
        big_body / 1024
    ));
    latency_rows(
        rows,
        "GET /api/v1/servers (1 row; bearer token checked)",
        &authed,
        "GET /healthz",
        &health,
    );
    latency_rows(
        rows,
        &format!("GET /api/v1/environments (100 of {ENVIRONMENTS})"),
        &page,
        "GET /healthz",
        &health,
    );
    latency_rows(
        rows,
        &format!("GET /api/v1/environments?limit=1000 (of {ENVIRONMENTS})"),
        &big,
        "GET /healthz",
        &health,
    );
    latency_rows(
        rows,
        "GET /api/v1/environments?q=site-0999 (10 matches)",
        &search,
        "GET /healthz",
        &health,
    );
    for ((what, samples), (call, in_process)) in [
        ("GET /api/v1/environments", &page),
        ("GET /api/v1/environments?limit=1000", &big),
        ("GET /api/v1/environments?q=site-0999", &search),
    ]
    .into_iter()
    .zip([
        ("(None, 100, 0)", &direct[0]),
        ("(None, 1000, 0)", &direct[1]),
        ("(Some(\"site-0999\"), 100, 0)", &direct[2]),
    ]) {
        rows.push(Row::new(
            format!("{what}, p50"),
            percentile_ms(samples, 50.0),
            format!("store.list_environments{call} in-process, p50"),
            percentile_ms(in_process, 50.0),
            Unit::Millis,
        ));
    }
    rows.push(Row::new(
        format!("aegird RSS after those {} requests", 5 * (n + WARMUP)),
        after_rss,
        "aegird idle RSS, empty store",
        empty_rss,
        Unit::MiB,
    ));
    Ok(())
}

/// Run blocking harness code (it waits on processes and threads) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("harness call panicked")
}

/// A state directory whose SQLite store holds one server, project and release, and
/// [`ENVIRONMENTS`] environments on them.
async fn seed_environments(state_dir: &Path) -> Result<()> {
    let store = Store::open(&aegird::config::sqlite_url(&state_dir.join("aegir.db"))).await?;
    let now = SystemClock.now();
    let server = store
        .insert_server(&NewServerRow::local("web1"), now)
        .await?;
    let project = store
        .insert_project(
            "drupal",
            ProjectSource::Path,
            None,
            None,
            Some("/var/aegir/platforms/drupal-10.2.6"),
            now,
        )
        .await?;
    let release = store
        .insert_release(
            &NewReleaseRow {
                name: "drupal-10.2.6".into(),
                project_id: project.id,
                server_id: Some(server.id),
                git_ref: None,
                path: Some("/var/aegir/platforms/drupal-10.2.6".into()),
            },
            now,
        )
        .await?;
    for i in 1..=ENVIRONMENTS {
        store
            .insert_environment(
                &NewEnvironmentRow {
                    uri: format!("site-{i:05}.example.com"),
                    release_id: release.id,
                    server_id: server.id,
                    status: EnvironmentStatus::Active,
                    https: HttpsMode::Off,
                    aliases: vec![format!("www.site-{i:05}.example.com")],
                    redirect_aliases: true,
                    db_name: Some(format!("site{i:05}")),
                },
                now,
            )
            .await?;
    }
    store.close().await;
    Ok(())
}

// --- web UI

/// Render time of the web UI's pages over [`ENVIRONMENTS`] environments, through the router
/// without a socket (so it is aegird's time, not the network's), each beside the JSON API's
/// answer for the same rows.
async fn web_bench(samples: usize) -> Result<()> {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let dir = tempfile::tempdir()?;
    progress(&format!("seeding a store with {ENVIRONMENTS} environments"));
    seed_environments(dir.path()).await?;
    let store = Store::open(&aegird::config::sqlite_url(&dir.path().join("aegir.db"))).await?;
    let engine = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(aegird::backend::HostPlanner::new(dir.path())),
        engine_config(),
        "bench-web",
    );
    let app = aegird::app::App::new(
        engine,
        aegird::backend::SshKeys::new(dir.path().join("ssh")),
    );
    let router = aegird::api::router(app.clone());
    aegird::accounts::create_user(
        &store,
        "bench",
        Some("a benchmark password"),
        true,
        SystemClock.now(),
    )
    .await?;
    let session = match app.login("bench", "a benchmark password").await? {
        Ok(s) => s,
        Err(refused) => bail!("login refused: {refused:?}"),
    };
    let cookie = format!("{}={}", aegird::web::SESSION_COOKIE, session.cookie);
    let token = aegird::app::create_token(&store, "bench", SystemClock.now())
        .await?
        .secret;

    let time = |path: String, auth: (&'static str, String)| {
        let router = router.clone();
        async move {
            let mut out = Vec::with_capacity(samples);
            for i in 0..WARMUP + samples {
                let req = Request::get(&path)
                    .header(auth.0, &auth.1)
                    .body(Body::empty())?;
                let start = Instant::now();
                let resp = router.clone().oneshot(req).await?;
                ensure!(resp.status().is_success(), "{path}: {}", resp.status());
                let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
                let took = start.elapsed();
                ensure!(!body.is_empty(), "{path}: an empty answer");
                if i >= WARMUP {
                    out.push(took);
                }
            }
            Ok::<_, anyhow::Error>(out)
        }
    };
    let html = || ("cookie", cookie.clone());
    let json = || ("authorization", format!("Bearer {token}"));
    let mut rows = Vec::new();
    for (what, page, api) in [
        (
            "environment list, first page (50 rows)",
            "/environments".to_string(),
            "/api/v1/environments?limit=50".to_string(),
        ),
        (
            "environment list, page 101 (rows 5,001-5,050)",
            "/environments?page=101".to_string(),
            "/api/v1/environments?limit=50&offset=5000".to_string(),
        ),
        (
            "environment list, search \"site-0999\" (10 rows)",
            "/environments?q=site-0999".to_string(),
            "/api/v1/environments?limit=50&q=site-0999".to_string(),
        ),
        (
            // Five queries (running, queued and failed operations, environments per status,
            // the ten oldest last good backups) against the JSON of the last one's rows.
            "dashboard",
            "/".to_string(),
            "/api/v1/environments?limit=10".to_string(),
        ),
    ] {
        progress(&format!("{what}: {samples} requests each"));
        let rendered = time(page.clone(), html()).await?;
        let baseline = time(api.clone(), json()).await?;
        latency_rows(
            &mut rows,
            &format!("GET {page}: {what}"),
            &rendered,
            &format!("GET {api} (JSON)"),
            &baseline,
        );
    }
    println!();
    println!("Web UI render time, {ENVIRONMENTS} environments, SQLite store, in-process router ({samples} requests per series)");
    println!();
    print_table(&rows);
    store.close().await;
    Ok(())
}

/// Resident set size of a process, from /proc.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS line")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("unreadable VmRSS")?;
    Ok(kib / 1024.0)
}

/// Time `n` GETs of `url` (after [`WARMUP`] unmeasured ones), each until its whole body is in.
async fn http_series(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    n: usize,
) -> Result<Vec<Duration>> {
    Ok(http_series_bodies(client, url, token, n).await?.0)
}

/// As [`http_series`], and return the last body.
async fn http_series_bodies(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    n: usize,
) -> Result<(Vec<Duration>, Vec<u8>)> {
    let mut samples = Vec::with_capacity(n);
    let mut last = Vec::new();
    for i in 0..WARMUP + n {
        let mut req = client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let t0 = Instant::now();
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let dt = t0.elapsed();
        ensure!(
            status.is_success(),
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        if i >= WARMUP {
            samples.push(dt);
        }
        last = body.to_vec();
    }
    Ok((samples, last))
}

/// A timed series of an environment list, checking that the answer is the page asked for.
/// Returns the samples and the size of the body.
async fn http_series_checked(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
    want_items: usize,
    want_total: usize,
) -> Result<(Vec<Duration>, usize)> {
    let (samples, body) = http_series_bodies(client, url, Some(token), n).await?;
    let page: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    let total = page["total"].as_u64().unwrap_or(0) as usize;
    ensure!(
        items == want_items && total == want_total,
        "GET {url}: {items} items of {total}, expected {want_items} of {want_total}"
    );
    Ok((samples, body.len()))
}

// --- site

/// The by-hand baseline for one WordPress site: what an admin (or Aegir 3's provision) runs at
/// the least. `$1` uri, `$2` database name, `$3` password, `$4` WORDPRESS_CONFIG name; the
/// install script on stdin is aegird's own, so both sides run the same PHP.
const BY_HAND_INSTALL: &str = r#"set -e
mariadb -e "CREATE DATABASE \`$2\`; CREATE USER '$2'@'localhost' IDENTIFIED BY '$3'; GRANT ALL ON \`$2\`.* TO '$2'@'localhost';"
cat > /etc/wordpress/config-$4.php <<PHP
<?php
define('DB_NAME', '$2'); define('DB_USER', '$2'); define('DB_PASSWORD', '$3'); define('DB_HOST', 'localhost');
define('WP_HOME', 'http://$1'); define('WP_SITEURL', 'http://$1');
PHP
cat > /etc/aegir/nginx/vhosts/$1.conf <<NGINX
server {
    listen 80;
    server_name $1;
    root /usr/share/wordpress;
    index index.php;
    location / { try_files \$uri \$uri/ /index.php?\$args; }
    location ~ \.php\$ {
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
        fastcgi_param WORDPRESS_CONFIG $4;
        fastcgi_pass unix:/run/php/aegir-php8.2-fpm.sock;
    }
}
NGINX
nginx -t 2>/dev/null
nginx -s reload
env HTTP_HOST=$1 WORDPRESS_CONFIG=$4 php -- /usr/share/wordpress "By hand" admin@$1 /tmp/$1-uploads http://$1/wp-content/uploads > /dev/null
"#;

const BY_HAND_DELETE: &str = r#"set -e
mariadb -e "DROP DATABASE \`$2\`; DROP USER '$2'@'localhost';"
rm -f /etc/wordpress/config-$4.php /etc/aegir/nginx/vhosts/$1.conf
nginx -s reload
"#;

fn timed(mut cmd: Command, what: &str) -> Result<f64> {
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(ms)
}

/// The local server and a release `wp` of Debian's WordPress, both verified.
fn local_wordpress(cli: &dyn Fn(&[&str]) -> Command) -> Result<()> {
    for args in [
        &["server", "add", "local", "--local"][..],
        &["server", "verify", "local", "--wait"],
        &["project", "add", "wp", "--path", "/usr/share/wordpress"],
        &[
            "release",
            "create",
            "wp",
            "--project",
            "wp",
            "--server",
            "local",
        ],
        &["release", "verify", "wp", "--wait"],
    ] {
        timed(cli(args), &format!("aegir {}", args.join(" ")))?;
    }
    Ok(())
}

fn site_bench(rounds: usize) -> Result<()> {
    let aegird = aegir_tests::bin("aegird");
    let aegir = aegir_tests::bin("aegir");
    let state = tempfile::tempdir()?;
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("bench", None);
    let cli = |args: &[&str]| {
        let mut c = Command::new(&aegir);
        c.args(args)
            .env("AEGIR_URL", d.url())
            .env("AEGIR_TOKEN", &token);
        c
    };
    local_wordpress(&cli)?;
    println!("# aegir-bench site");
    println!();
    println!("- aegird: {}", aegird.display());
    println!("- rounds: {rounds} (plus one warm-up), aegird and by hand alternating");
    println!(
        "- load average (1, 5, 15 min) at the start: {}",
        load_average()
    );
    println!();

    let (mut ours_install, mut ours_delete) = (Vec::new(), Vec::new());
    let (mut hand_install, mut hand_delete) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let tag = format!("{:08x}", rand::random::<u32>());
        let uri = format!("bench-{tag}.test");
        let install = timed(
            cli(&["env", "create", &uri, "--release", "wp", "--wait"]),
            "aegir env create",
        )?;
        // The by-hand delete keeps no backup either: the pre-delete one is skipped.
        let delete = timed(
            cli(&["env", "delete", &uri, "--skip-backup", "--wait"]),
            "aegir env delete",
        )?;

        let uri = format!("hand-{tag}.test");
        let db = format!("hand_{tag}");
        let config = format!("hand-{tag}");
        let password = format!("{:016x}", rand::random::<u64>());
        let by_hand = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script, "sh", &uri, &db, &password, &config]);
            c
        };
        // The shell's heredocs use its stdin; the PHP install script goes to php as a file.
        let php = std::env::temp_dir().join(format!("hand-{tag}.php"));
        std::fs::write(&php, aegird::apps::wordpress::install_script())?;
        let script = BY_HAND_INSTALL.replace(
            "php -- /usr/share/wordpress",
            &format!("php {} /usr/share/wordpress", php.display()),
        );
        let hand_i = timed(by_hand(&script), "the by-hand install")?;
        let hand_d = timed(by_hand(BY_HAND_DELETE), "the by-hand delete")?;
        let _ = std::fs::remove_file(&php);
        if round > 0 {
            ours_install.push(install);
            ours_delete.push(delete);
            hand_install.push(hand_i);
            hand_delete.push(hand_d);
        }
    }
    let rows = vec![
        Row::new(
            "WordPress environment install: `aegir env create --wait`, median",
            median(&mut ours_install),
            "by hand: database + config + vhost, nginx -t + reload, wp_install",
            median(&mut hand_install),
            Unit::Millis,
        ),
        Row::new(
            "WordPress environment delete: `aegir env delete --wait`, median",
            median(&mut ours_delete),
            "by hand: drop database and user, remove config and vhost, reload",
            median(&mut hand_delete),
            Unit::Millis,
        ),
    ];
    print_table(&rows);
    println!();
    println!(
        "- load average (1, 5, 15 min) at the end: {}",
        load_average()
    );
    Ok(())
}

// --- backup

/// Rows in the shape of WordPress's biggest tables: posts with their text, post meta, comments.
/// `$1` is the database; `$2` how many rows of posts (the others scale from it). MariaDB's
/// sequence engine makes the rows server-side, so building 1 GiB takes seconds, not minutes.
const MAKE_ROWS: &str = r#"set -e
mariadb -e "CREATE DATABASE \`$1\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
mariadb "$1" <<SQL
CREATE TABLE wp_posts (ID BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  post_author BIGINT UNSIGNED NOT NULL, post_date DATETIME NOT NULL, post_title TEXT NOT NULL,
  post_content LONGTEXT NOT NULL, post_status VARCHAR(20) NOT NULL, post_name VARCHAR(200) NOT NULL,
  KEY post_name (post_name(191)), KEY type_status_date (post_status, post_date, ID));
CREATE TABLE wp_postmeta (meta_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  post_id BIGINT UNSIGNED NOT NULL, meta_key VARCHAR(255), meta_value LONGTEXT,
  KEY post_id (post_id), KEY meta_key (meta_key(191)));
CREATE TABLE wp_comments (comment_ID BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  comment_post_ID BIGINT UNSIGNED NOT NULL, comment_author TINYTEXT NOT NULL,
  comment_date DATETIME NOT NULL, comment_content TEXT NOT NULL, KEY comment_post_ID (comment_post_ID));
CREATE TABLE wp_options (option_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  option_name VARCHAR(191) NOT NULL UNIQUE, option_value LONGTEXT NOT NULL);
INSERT INTO wp_options (option_name, option_value) VALUES ('siteurl', 'http://bench.test'),
  ('home', 'http://bench.test'), ('blogname', 'Benchmark');
INSERT INTO wp_posts (post_author, post_date, post_title, post_content, post_status, post_name)
  SELECT 1 + seq % 7, '2024-01-01' + INTERVAL seq MINUTE, CONCAT('Post number ', seq),
    CONCAT(REPEAT(CONCAT('Lorem ipsum dolor sit amet, consectetur adipiscing elit ', seq % 97, '. '), 8),
           MD5(seq), SHA2(seq, 512), REPEAT('Sed ut perspiciatis unde omnis iste natus error. ', 6)),
    IF(seq % 10 = 0, 'draft', 'publish'), CONCAT('post-number-', seq)
  FROM seq_1_to_$2;
INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
  SELECT seq, CONCAT('_meta_', seq % 13), CONCAT('a:2:{s:4:"file";s:32:"', MD5(seq), '";s:5:"sizes";i:', seq, ';}')
  FROM seq_1_to_$2;
INSERT INTO wp_comments (comment_post_ID, comment_author, comment_date, comment_content)
  SELECT seq, CONCAT('Reader ', seq % 1000), '2024-02-01' + INTERVAL seq MINUTE,
    CONCAT('Thanks for post ', seq, '! ', REPEAT('Great read, very helpful. ', 4), MD5(seq * 7))
  FROM seq_1_to_$2;
SQL
"#;

/// Bytes of SQL one post and its meta and comment dump to, roughly (measured: the generator
/// is sized from it, and the real size is printed).
const BYTES_PER_POST: u64 = 1350;

/// Files as a site accumulates them: half text (pages, CSS, exports: compressible), half
/// random bytes (JPEGs and PNGs are already compressed), in dated upload directories.
fn make_files(dir: &Path, mib: u64) -> Result<()> {
    use rand::RngCore;
    let mut rng = rand::rng();
    let half = mib * 1024 * 1024 / 2;
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "wordpress",
        "upload",
        "gallery",
        "caption",
        "theme",
        "widget",
        "aegir",
        "hosting",
        "backup",
        "restore",
        "site",
    ];
    let (mut text, mut binary) = (0u64, 0u64);
    let mut n = 0u32;
    while text < half || binary < half {
        let sub = dir.join(format!("{}/{:02}", 2015 + n % 10, 1 + n % 12));
        std::fs::create_dir_all(&sub)?;
        if text < half {
            let mut s = String::with_capacity(256 * 1024);
            while s.len() < 200 * 1024 {
                s.push_str(words[(rng.next_u32() as usize) % words.len()]);
                s.push(if rng.next_u32() % 12 == 0 { '\n' } else { ' ' });
            }
            std::fs::write(sub.join(format!("page-{n}.html")), &s)?;
            text += s.len() as u64;
        }
        if binary < half {
            let mut b = vec![0u8; 400 * 1024];
            rng.fill_bytes(&mut b);
            std::fs::write(sub.join(format!("photo-{n}.jpg")), &b)?;
            binary += b.len() as u64;
        }
        n += 1;
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(dir).output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Seconds between two RFC 3339 timestamps of the API.
fn secs_between(from: &serde_json::Value, to: &serde_json::Value) -> f64 {
    let at = |v: &serde_json::Value| {
        serde_json::from_value::<Timestamp>(v.clone()).map_or(0.0, |t| t.0 as f64 / 1000.0)
    };
    at(to) - at(from)
}

/// Seconds a task of an operation took, from its recorded start and end.
fn task_secs(detail: &serde_json::Value, names: &[&str]) -> f64 {
    detail["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter(|t| names.iter().any(|n| t["name"] == *n))
                .map(|t| secs_between(&t["started_at"], &t["finished_at"]))
                .sum()
        })
        .unwrap_or(0.0)
}

fn backup_bench(db_mib: u64, files_mib: u64) -> Result<()> {
    let aegir = aegir_tests::bin("aegir");
    let state = tempfile::tempdir()?;
    let d = Daemon::start(state.path(), &DaemonOpts::default());
    let token = d.token("bench", None);
    let cli = |args: &[&str]| {
        let mut c = Command::new(&aegir);
        c.args(args)
            .env("AEGIR_URL", d.url())
            .env("AEGIR_TOKEN", &token);
        c
    };
    let json = |args: &[&str]| -> Result<serde_json::Value> {
        let out = cli(args).arg("--json").output()?;
        ensure!(
            out.status.success(),
            "aegir {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    local_wordpress(&cli)?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let uri = format!("bench-backup-{tag}.test");
    timed(
        cli(&["env", "create", &uri, "--release", "wp", "--wait"]),
        "aegir env create",
    )?;
    let env = json(&["env", "show", &uri])?;
    let key = env["db_name"].as_str().context("db_name")?.to_string();
    let site_dir = std::path::PathBuf::from(format!("/var/aegir/sites/{uri}"));

    // The site's content: the reference rows in a database of their own, swapped in for
    // WordPress's, and the files in its uploads directory.
    progress(&format!(
        "building {db_mib} MiB of rows and {files_mib} MiB of files"
    ));
    let posts = (db_mib * 1024 * 1024 / BYTES_PER_POST).max(1000);
    let scratch = format!("bench_{tag}");
    let mut make = Command::new("sh");
    make.args(["-c", MAKE_ROWS, "sh", &scratch, &posts.to_string()]);
    timed(make, "building the rows")?;
    let mut swap = Command::new("sh");
    swap.args([
        "-c",
        r#"set -e
tables() { mariadb -N -B -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$1'"; }
for t in $(tables "$1"); do mariadb -e "DROP TABLE \`$1\`.\`$t\`"; done
for t in $(tables "$2"); do mariadb -e "RENAME TABLE \`$2\`.\`$t\` TO \`$1\`.\`$t\`"; done
mariadb -e "DROP DATABASE \`$2\`""#,
        "sh",
        &key,
        &scratch,
    ]);
    timed(swap, "moving the rows into the site's database")?;
    make_files(&site_dir.join("files"), files_mib)?;
    let fix = Command::new("sh")
        .args([
            "-c",
            r#"chgrp -R www-data "$1" && find "$1" -type f -exec chmod 0660 {} +"#,
            "sh",
        ])
        .arg(site_dir.join("files"))
        .status()?;
    ensure!(fix.success(), "cannot give the files to www-data");
    let db_bytes: u64 = {
        let out = Command::new("mariadb")
            .args(["-N", "-B", "-e"])
            .arg(format!(
                "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{key}'"
            ))
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let files_bytes = dir_bytes(&site_dir.join("files"));
    // Flush what building wrote, so neither side pays for the other's dirty pages.
    let _ = Command::new("sync").status();

    println!("# aegir-bench backup");
    println!();
    println!("- site: {uri}, database {key}: {:.0} MiB in InnoDB ({posts} posts with meta and comments); files {:.0} MiB", db_bytes as f64 / 1048576.0, files_bytes as f64 / 1048576.0);
    println!(
        "- load average (1, 5, 15 min) at the start: {}",
        load_average()
    );
    println!();

    // (a) Aegir 3: mysqldump into the site directory, then tar czf of it, run inside it.
    progress("Aegir 3 backup: mysqldump + tar czf");
    let a3 = tempfile::tempdir()?;
    let tarball = a3.path().join(format!("{uri}-20240101.000000.tar.gz"));
    let mut a3_backup = Command::new("sh");
    a3_backup.args([
        "-c",
        r#"set -e
umask 077
mysqldump --single-transaction --quick --no-autocommit "$1" > "$2/database.sql"
cd "$2" && tar cpzf "$3" .
rm -f "$2/database.sql""#,
        "sh",
        &key,
    ]);
    a3_backup.arg(&site_dir).arg(&tarball);
    let a3_backup_s = timed(a3_backup, "the Aegir 3 backup")? / 1000.0;
    let a3_size = std::fs::metadata(&tarball)?.len();

    // (b) ours.
    progress("aegir env backup --wait");
    let backup_cpu_before = (mariadbd_pid().and_then(cpu_secs), cpu_secs(d.child.id()));
    let ours_backup_s =
        timed(cli(&["env", "backup", &uri, "--wait"]), "aegir env backup")? / 1000.0;
    let backup_cpu_after = (mariadbd_pid().and_then(cpu_secs), cpu_secs(d.child.id()));
    let list = json(&["backup", "list", &uri])?;
    let ours = &list[0];
    let ours_size = ours["size"].as_u64().context("size")?;
    let ours_id = ours["id"].as_i64().context("id")?.to_string();

    // Restores: Aegir 3's deploy is tar xzf into a new directory and an import into a new
    // database; ours is the whole restore operation (disabled page, pre-restore backup,
    // staging, switch, drop), whose restore steps are also timed on their own.
    progress("Aegir 3 restore: tar xzf + mysql import");
    let restore_dir = a3.path().join("restore");
    std::fs::create_dir_all(&restore_dir)?;
    let a3_db = format!("a3restore_{tag}");
    // Its two halves are timed apart, to show where the time goes.
    let mut a3_untar = Command::new("tar");
    a3_untar
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&restore_dir);
    let a3_untar_s = timed(a3_untar, "the Aegir 3 restore's tar xzf")? / 1000.0;
    let db_cpu_before = mariadbd_pid().and_then(cpu_secs);
    let mut a3_import = Command::new("sh");
    a3_import.args([
        "-c",
        r#"set -e
mariadb -e "CREATE DATABASE \`$2\`"
mariadb "$2" < "$1/database.sql""#,
        "sh",
    ]);
    a3_import.arg(&restore_dir).arg(&a3_db);
    let a3_import_s = timed(a3_import, "the Aegir 3 restore's import")? / 1000.0;
    let a3_import_db_cpu = mariadbd_pid()
        .and_then(cpu_secs)
        .zip(db_cpu_before)
        .map(|(after, before)| after.0 - before.0);
    let a3_restore_s = a3_untar_s + a3_import_s;
    let _ = Command::new("mariadb")
        .args(["-e", &format!("DROP DATABASE IF EXISTS `{a3_db}`")])
        .status();
    drop(a3);

    progress("aegir env restore --wait");
    let cpu_before = (mariadbd_pid().and_then(cpu_secs), cpu_secs(d.child.id()));
    let out = cli(&["env", "restore", &uri, &ours_id, "--wait", "--json"]).output()?;
    let cpu_after = (mariadbd_pid().and_then(cpu_secs), cpu_secs(d.child.id()));
    ensure!(
        out.status.success(),
        "aegir env restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let op: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let detail = json(&[
        "op",
        "show",
        &op["id"].as_i64().context("op id")?.to_string(),
    ])?;
    let ours_restore_s = secs_between(&detail["started_at"], &detail["finished_at"]);
    let ours_restore_steps_s = task_secs(&detail, &["stage", "switch", "drop-previous"]);
    let ours_stage_s = task_secs(&detail, &["stage"]);
    // The stage's own account of its import: tables per connection, each connection's time.
    let op_id = op["id"].as_i64().context("op id")?.to_string();
    let logs = cli(&["op", "logs", &op_id]).output()?;
    let import_lines: Vec<String> = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .filter(|l| l.contains("tables loaded on") || l.contains("import times"))
        .map(|l| l.trim().to_string())
        .collect();

    let rows = vec![
        Row::new(
            "backup: `aegir env backup --wait`",
            ours_backup_s,
            "Aegir 3: mysqldump into the site dir + tar czf",
            a3_backup_s,
            Unit::Secs,
        ),
        Row::new(
            "archive size (zstd, manifest with SHA-256 sums)",
            ours_size as f64 / 1048576.0,
            "Aegir 3 tarball (gzip)",
            a3_size as f64 / 1048576.0,
            Unit::MiB,
        ),
        Row::new(
            "restore steps: stage (zstd → tar -x, mariadb import) + switch + drop",
            ours_restore_steps_s,
            "Aegir 3 deploy: tar xzf + mysql import",
            a3_restore_s,
            Unit::Secs,
        ),
        Row::new(
            "whole restore operation (includes its pre-restore backup)",
            ours_restore_s,
            "Aegir 3: its pre-restore backup + tar xzf + import",
            a3_backup_s + a3_restore_s,
            Unit::Secs,
        ),
    ];
    print_table(&rows);
    println!();
    println!(
        "- speed-up (baseline ÷ figure): backup {:.2}×, restore steps {:.2}×, whole restore {:.2}×; archive {:.2}× the tarball's size",
        a3_backup_s / ours_backup_s,
        a3_restore_s / ours_restore_steps_s.max(0.001),
        (a3_backup_s + a3_restore_s) / ours_restore_s.max(0.001),
        ours_size as f64 / a3_size as f64
    );
    println!(
        "- restore steps apart: ours stage {ours_stage_s:.1} s, switch + drop {:.1} s; \
         Aegir 3 tar xzf {a3_untar_s:.1} s, mysql import {a3_import_s:.1} s",
        ours_restore_steps_s - ours_stage_s
    );
    for line in &import_lines {
        println!("- our stage's log: {line}");
    }
    // Where the processors went: on two cores, the import is bound by CPU. The restore
    // operation includes a pre-restore backup, so a backup's own share is shown too.
    let cpu = |before: CpuPair, after: CpuPair| match (before, after) {
        ((Some(db0), Some(us0)), (Some(db1), Some(us1))) => format!(
            "mariadbd {:.1} s, aegird {:.1} s, its child processes (clients, tar, dump) {:.1} s",
            db1.0 - db0.0,
            us1.0 - us0.0,
            us1.1 - us0.1
        ),
        _ => "not readable".to_string(),
    };
    println!(
        "- CPU during our whole restore operation: {}; during our backup: {}",
        cpu(cpu_before, cpu_after),
        cpu(backup_cpu_before, backup_cpu_after)
    );
    if let Some(cpu) = a3_import_db_cpu {
        println!("- CPU during Aegir 3's mysql import: mariadbd {cpu:.1} s");
    }
    println!(
        "- load average (1, 5, 15 min) at the end: {}",
        load_average()
    );
    let _ = Command::new(&aegir)
        .args(["env", "delete", &uri, "--skip-backup", "--wait"])
        .env("AEGIR_URL", d.url())
        .env("AEGIR_TOKEN", &token)
        .output();
    Ok(())
}

// --- import

/// The import of an Aegir 3 installation, `rounds` times on a fresh store each (medians).
fn import_bench(sites: usize, rounds: usize) -> Result<()> {
    progress(&format!(
        "loading the Aegir 3 fixture and generating {sites} sites"
    ));
    let a3 = aegir_tests::aegir3::Aegir3::load();
    // The fixture's own 48 objects (REFERENCE section 7), then the generated ones.
    let objects = 48 + a3.generate_sites(sites);
    let (mut dry, mut first, mut second, mut raw) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        progress(&format!("round {round} of {rounds}"));
        let state = tempfile::tempdir()?;
        let d = Daemon::start(state.path(), &DaemonOpts::default());
        let token = d.token("bench", None);
        let import = |extra: &[&str]| -> Result<(f64, serde_json::Value)> {
            let t = Instant::now();
            let (code, report) = a3.import(&d, &token, extra);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            ensure!(code == 0, "the import failed (exit {code}): {report:#}");
            Ok((ms, report))
        };
        let (ms, report) = import(&["--dry-run"])?;
        let planned = report["items"].as_array().map_or(0, Vec::len);
        ensure!(
            planned == objects,
            "the dry run planned {planned} objects, not {objects}"
        );
        dry.push(ms);
        first.push(import(&[])?.0);
        let (ms, report) = import(&[])?;
        let changed = report["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["outcome"] != "unchanged" && i["outcome"] != "skipped")
            .count();
        ensure!(changed == 0, "the second import changed {changed} objects");
        second.push(ms);

        // What any import has to read, read raw: the whole hostmaster database, dumped in
        // one transaction, and every file under the Aegir root.
        let t = Instant::now();
        let dump = Command::new("mariadb-dump")
            .args(["--single-transaction", "--quick", &a3.db])
            .stdout(std::process::Stdio::null())
            .status()?;
        ensure!(dump.success(), "mariadb-dump failed");
        let mut bytes = 0;
        read_tree(a3.root.path(), &mut bytes)?;
        raw.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(d);
    }
    let raw = median(&mut raw);
    let what = format!(
        "the hostmaster database dumped and the {} files under the root read",
        count_files(a3.root.path())
    );
    let rows = vec![
        Row::new(
            format!("dry run ({objects} objects planned)"),
            median(&mut dry),
            what.clone(),
            raw,
            Unit::Millis,
        ),
        Row::new(
            "first import (all adopted)",
            median(&mut first),
            what.clone(),
            raw,
            Unit::Millis,
        ),
        Row::new(
            "second import (nothing changed)",
            median(&mut second),
            what,
            raw,
            Unit::Millis,
        ),
    ];
    println!();
    println!(
        "Aegir 3 import: the shared fixture plus {sites} generated sites ({objects} objects), \
         median of {rounds} on a fresh SQLite store each; each figure is the whole \
         `aegir import aegir3 --json` call"
    );
    println!();
    print_table(&rows);
    Ok(())
}

fn read_tree(dir: &Path, bytes: &mut u64) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.is_dir() {
            read_tree(&path, bytes)?;
        } else {
            *bytes += std::fs::read(&path)?.len() as u64;
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                1
            }
        })
        .sum()
}
