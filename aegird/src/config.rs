//! Typed daemon configuration: defaults, then a TOML file, then `AEGIR_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The port aegird listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7270";
/// Where releases built from git are cloned on a server, as Aegir 3's platforms were.
pub const DEFAULT_RELEASES_DIR: &str = "/var/aegir/platforms";
/// Where the packaged unit points `--config`.
pub const SYSTEM_CONFIG: &str = "/etc/aegir/aegird.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no state directory: the user has no data directory ($XDG_DATA_HOME or $HOME); \
         pass --state-dir or set AEGIR_STATE_DIR"
    )]
    NoStateDir,
}

/// The configuration file as written by an admin. Every field is optional; unknown keys are
/// refused so a typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub node_name: Option<String>,
    pub releases_dir: Option<String>,
    #[serde(default)]
    pub engine: FileEngine,
    #[serde(default)]
    pub backups: FileBackups,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackups {
    /// Where archives are kept on aegird's host (default: `<state_dir>/backups`).
    pub dir: Option<PathBuf>,
    /// Default interval between scheduled backups ("1d", "12h"), or "off".
    pub interval: Option<String>,
    /// How often the scheduler looks for environments that are due ("1m").
    pub check_every: Option<String>,
    /// Which scheduled backups are kept (restic's forget rules).
    pub retention: Option<crate::backup::retention::Policy>,
    /// zstd compression level of the files, 1 (fastest) to 19 (smallest); the dump's is this
    /// or 3, whichever is lower.
    pub level: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEngine {
    pub concurrency: Option<usize>,
    pub lease_seconds: Option<u64>,
    pub shutdown_timeout_seconds: Option<u64>,
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

/// The configuration aegird runs with, every value resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`. Never logged whole: it may hold a password.
    pub database_url: String,
    /// Names this daemon in operation leases; must differ between daemons sharing a store.
    pub node_name: String,
    /// Where releases built from git are cloned on servers.
    pub releases_dir: String,
    pub engine: EngineConfig,
    pub backups: BackupsConfig,
}

/// zstd level of archives unless configured. 7, not zstd's default 3: on the backup bench it
/// makes the archive smaller than Aegir 3's tar.gz and keeps the backup over 3 times faster
/// (docs/benchmarks.md has both runs).
pub const DEFAULT_LEVEL: i32 = 7;

#[derive(Debug, Clone)]
pub struct BackupsConfig {
    pub dir: PathBuf,
    /// Seconds between scheduled backups of an environment that sets none; 0 is off.
    pub interval: i64,
    pub check_every: Duration,
    pub retention: crate::backup::retention::Policy,
    /// zstd level of new archives.
    pub level: i32,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Operations run at once by this daemon.
    pub concurrency: usize,
    /// How long a claimed operation stays ours without a heartbeat.
    pub lease: Duration,
    /// On SIGTERM, how long running operations may take to finish before they are stopped.
    pub shutdown_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Resolve the configuration from the file named by `--config` (or `AEGIR_CONFIG`), the
    /// environment and the flags.
    pub fn load(flags: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(flags, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with the environment passed in (tests).
    pub fn load_with_env(
        flags: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = flags
            .config
            .clone()
            .or_else(|| env("AEGIR_CONFIG").map(PathBuf::from));
        let file = match &path {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };

        let listen = flags
            .listen
            .clone()
            .or_else(|| env("AEGIR_LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen: {listen:?} is not an address:port such as {DEFAULT_LISTEN}"
            ))
        })?;

        let state_dir = match flags
            .state_dir
            .clone()
            .or_else(|| env("AEGIR_STATE_DIR").map(PathBuf::from))
            .or(file.state_dir)
        {
            Some(d) => d,
            None => default_state_dir(&env).ok_or(ConfigError::NoStateDir)?,
        };
        let database_url = flags
            .database_url
            .clone()
            .or_else(|| env("AEGIR_DATABASE_URL"))
            .or(file.database_url)
            .unwrap_or_else(|| sqlite_url(&state_dir.join("aegir.db")));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "database_url: must start with sqlite: or postgres://".into(),
            ));
        }
        let node_name = env("AEGIR_NODE_NAME")
            .or(file.node_name)
            .unwrap_or_else(default_node_name);
        let releases_dir = env("AEGIR_RELEASES_DIR")
            .or(file.releases_dir)
            .unwrap_or_else(|| DEFAULT_RELEASES_DIR.to_string());
        crate::model::validate::abs_path("releases_dir", &releases_dir)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;

        let defaults = EngineConfig::default();
        let concurrency = env_num(&env, "AEGIR_ENGINE_CONCURRENCY")?
            .map(|n| n as usize)
            .or(file.engine.concurrency)
            .unwrap_or(defaults.concurrency);
        if concurrency == 0 {
            return Err(ConfigError::Invalid(
                "engine.concurrency: must be at least 1".into(),
            ));
        }
        let lease = env_num(&env, "AEGIR_ENGINE_LEASE_SECONDS")?
            .or(file.engine.lease_seconds)
            .map(Duration::from_secs)
            .unwrap_or(defaults.lease);
        if lease < Duration::from_secs(2) {
            return Err(ConfigError::Invalid(
                "engine.lease_seconds: must be at least 2".into(),
            ));
        }
        let shutdown_timeout = env_num(&env, "AEGIR_ENGINE_SHUTDOWN_TIMEOUT_SECONDS")?
            .or(file.engine.shutdown_timeout_seconds)
            .map(Duration::from_secs)
            .unwrap_or(defaults.shutdown_timeout);

        let backups_dir = env("AEGIR_BACKUPS_DIR")
            .map(PathBuf::from)
            .or(file.backups.dir)
            .unwrap_or_else(|| state_dir.join("backups"));
        if !backups_dir.is_absolute() {
            return Err(ConfigError::Invalid(format!(
                "backups.dir: {} must be an absolute path",
                backups_dir.display()
            )));
        }
        let interval = match env("AEGIR_BACKUPS_INTERVAL").or(file.backups.interval) {
            None => 86400,
            Some(v) if v == "off" => 0,
            Some(v) => duration("backups.interval", &v)?.as_secs() as i64,
        };
        let check_every = match env("AEGIR_BACKUPS_CHECK_EVERY").or(file.backups.check_every) {
            None => Duration::from_secs(60),
            Some(v) => duration("backups.check_every", &v)?,
        };
        let level = match env_num(&env, "AEGIR_BACKUPS_LEVEL")? {
            Some(n) => i32::try_from(n).unwrap_or(i32::MAX),
            None => file.backups.level.unwrap_or(DEFAULT_LEVEL),
        };
        if !(1..=19).contains(&level) {
            return Err(ConfigError::Invalid(format!(
                "backups.level: {level} is not a zstd level from 1 to 19"
            )));
        }

        Ok(Config {
            listen,
            state_dir,
            database_url,
            node_name,
            releases_dir,
            engine: EngineConfig {
                concurrency,
                lease,
                shutdown_timeout,
            },
            backups: BackupsConfig {
                dir: backups_dir,
                interval,
                check_every,
                retention: file.backups.retention.unwrap_or_default(),
                level,
            },
        })
    }
}

/// A positive duration such as "1d" or "90s".
fn duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(v) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        _ => Err(ConfigError::Invalid(format!(
            "{key}: {v:?} is not a duration of at least a second, such as \"1d\" or \"12h\""
        ))),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn env_num(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<u64>, ConfigError> {
    match env(var) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ConfigError::Env {
            var,
            message: format!("{v:?} is not a whole number"),
        }),
    }
}

/// `$XDG_DATA_HOME/aegir`, else `~/.local/share/aegir`.
fn default_state_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(x) = env("XDG_DATA_HOME").filter(|x| x.starts_with('/')) {
        return Some(PathBuf::from(x).join("aegir"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/aegir"))
        .or_else(|| dirs::data_dir().map(|d| d.join("aegir")))
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "aegird".to_string())
}

/// Where the password sits in a URL's userinfo (`scheme://user:password@host...`). The
/// userinfo ends at the last `@` before the query: a password may itself hold `@` or `/`.
fn password_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let before_query = rest.find('?').unwrap_or(rest.len());
    let at = rest[..before_query].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some((start + colon + 1, start + at))
}

/// The password of a database URL, as written in it (still percent-encoded).
pub fn url_password(url: &str) -> Option<&str> {
    password_span(url).map(|(from, to)| &url[from..to])
}

/// A database URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match password_span(url) {
        Some((from, to)) => format!("{}***{}", &url[..from], &url[to..]),
        None => url.to_string(),
    }
}

/// A SQLite URL that creates the file when missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact_url("postgres://aegir:s3cret@db:5432/aegir"),
            "postgres://aegir:***@db:5432/aegir"
        );
        assert_eq!(
            redact_url("postgres://aegir@db/aegir"),
            "postgres://aegir@db/aegir"
        );
        assert_eq!(redact_url("sqlite:///x/aegir.db"), "sqlite:///x/aegir.db");
    }

    #[test]
    fn redacts_urls() {
        assert_eq!(
            redact_url("mysql://u:p%40ss@h:3306/db?socket=/x"),
            "mysql://u:***@h:3306/db?socket=/x"
        );
        assert_eq!(redact_url("mysql://u:p@ss@h/db"), "mysql://u:***@h/db");
        assert_eq!(
            redact_url("mysql://root@localhost/db"),
            "mysql://root@localhost/db"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_use_the_user_data_dir_and_loopback() {
        let c =
            Config::load_with_env(&Overrides::default(), env_of(&[("HOME", "/home/ann")])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.state_dir, PathBuf::from("/home/ann/.local/share/aegir"));
        assert_eq!(
            c.database_url,
            "sqlite:///home/ann/.local/share/aegir/aegir.db?mode=rwc"
        );
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aegird.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nstate_dir = \"/file\"\n[engine]\nconcurrency = 9\n",
        )
        .unwrap();
        let env = env_of(&[("AEGIR_LISTEN", "127.0.0.1:2"), ("HOME", "/h")]);
        let flags = Overrides {
            config: Some(file.clone()),
            state_dir: Some("/flag".into()),
            ..Default::default()
        };
        let c = Config::load_with_env(&flags, env).unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.state_dir, PathBuf::from("/flag"));
        assert_eq!(c.engine.concurrency, 9);
    }

    #[test]
    fn the_packaged_config_file_is_valid() {
        let file: FileConfig = toml::from_str(include_str!("../../packaging/aegird.toml")).unwrap();
        assert_eq!(file.listen.as_deref(), Some(DEFAULT_LISTEN));
        assert_eq!(file.state_dir, Some(PathBuf::from("/var/lib/aegir")));
        assert_eq!(
            file.engine.concurrency,
            Some(EngineConfig::default().concurrency)
        );
        // The file shows the defaults of an installed aegird, backups included.
        assert_eq!(
            file.backups.retention,
            Some(crate::backup::retention::Policy::default())
        );
        let c = Config::load_with_env(&Overrides::default(), |k| {
            (k == "AEGIR_STATE_DIR").then(|| "/var/lib/aegir".to_string())
        })
        .unwrap();
        assert_eq!(c.backups.dir, PathBuf::from("/var/lib/aegir/backups"));
        assert_eq!(file.backups.dir, Some(c.backups.dir));
        assert_eq!(c.backups.interval, 86400);
        assert_eq!(file.backups.interval.as_deref(), Some("1d"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aegird.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let flags = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let err = Config::load_with_env(&flags, env_of(&[("HOME", "/h")])).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");

        let err = Config::load_with_env(
            &Overrides {
                listen: Some("nowhere".into()),
                ..Default::default()
            },
            env_of(&[("HOME", "/h")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Config::load_with_env(
            &Overrides::default(),
            env_of(&[("HOME", "/h"), ("AEGIR_ENGINE_CONCURRENCY", "many")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("AEGIR_ENGINE_CONCURRENCY"),
            "{err}"
        );
    }
}
