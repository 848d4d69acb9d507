//! Typed readers for Aegir 3's drush alias files and per-site `drushrc.php`, on top of [`php`].
//!
//! The alias files in `~aegir/.drush/` are the only place some facts live (server paths, the
//! master DB URL, a site's `site_path`), so the importer reads them; see REFERENCE.md section 2
//! for the keys. Values come from hosting's command line, so numbers and booleans may be strings,
//! and a literal `'null'` means unset.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::php::{self, PhpError, Value};

const ALIAS_SUFFIX: &str = ".alias.drushrc.php";

/// A password kept out of `Debug` output (and so out of logs and error reports).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A server's `master_db` (`mysql://user:pass@host[:port]`), percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub scheme: String,
    pub user: String,
    pub password: Secret,
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAlias {
    pub name: String,
    pub remote_host: String,
    pub aegir_root: String,
    pub script_user: String,
    pub ip_addresses: Vec<String>,
    /// `None` for a server without an HTTP service (e.g. a DB-only server).
    pub http_service_type: Option<String>,
    pub http_port: Option<u16>,
    pub web_group: Option<String>,
    /// `None` for a server without a DB service (e.g. the fixture's `web2.example.com`).
    pub db_service_type: Option<String>,
    pub db_port: Option<u16>,
    pub master_db: Option<DbUrl>,
    pub config_path: String,
    pub backup_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformAlias {
    pub name: String,
    /// The web server's context name, without the `@`.
    pub web_server: String,
    pub root: String,
    /// `None` when the platform was not built from a makefile (saved as `''`).
    pub makefile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAlias {
    /// The alias name from the file; a `drush_aliases` copy has its own name but the site's uri.
    pub name: String,
    pub uri: String,
    /// Context names without the `@`.
    pub platform: String,
    pub db_server: String,
    pub root: String,
    pub site_path: String,
    pub site_enabled: bool,
    pub language: String,
    /// Optional because sites made before hosting's client feature have none.
    pub client_name: Option<String>,
    pub aliases: Vec<String>,
    /// The domain the aliases redirect to; `None` when saved as `false`.
    pub redirection: Option<String>,
    pub profile: String,
    /// 0 disabled, 1 enabled, 2 required; 0 when hosting_https was never enabled (no key).
    pub https_enabled: u8,
    pub https_key: Option<String>,
    pub drush_aliases: Vec<String>,
}

/// What one alias file describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    Server(ServerAlias),
    Platform(PlatformAlias),
    Site(SiteAlias),
}

impl Context {
    pub fn name(&self) -> &str {
        match self {
            Context::Server(s) => &s.name,
            Context::Platform(p) => &p.name,
            Context::Site(s) => &s.name,
        }
    }
}

/// A site's `sites/<uri>/drushrc.php`: its own database credentials and install state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDrushrc {
    pub db_type: String,
    pub db_host: String,
    pub db_port: u16,
    pub db_user: String,
    pub db_password: Secret,
    pub db_name: String,
    /// `false` when the key is missing: provision only writes it once an install finished.
    pub installed: bool,
    pub profile: Option<String>,
    pub language: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("{file}: {source}")]
    Syntax {
        file: String,
        #[source]
        source: PhpError,
    },
    #[error("{file}: defines {found}, expected exactly `$aliases['{expected}']`")]
    NameMismatch {
        file: String,
        expected: String,
        found: String,
    },
    #[error("{file}: missing required key `{key}`")]
    MissingKey { file: String, key: &'static str },
    #[error("{file}: key `{key}` is {found}, expected {expected}")]
    BadValue {
        file: String,
        key: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{file}: unknown context_type `{found}`")]
    UnknownContextType { file: String, found: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {size} bytes, more than the {} allowed", path.display(), php::MAX_FILE_SIZE)]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}: a symlink pointing outside the alias directory", path.display())]
    SymlinkOutside { path: PathBuf },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
}

/// The keys of one parsed array, with the file name for errors.
struct Fields<'a> {
    file: &'a str,
    value: &'a Value,
}

impl<'a> Fields<'a> {
    /// The value under `key`, treating NULL and hosting's literal `'null'` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        match self.value.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Str(s)) if s == "null" => None,
            Some(v) => Some(v),
        }
    }

    fn bad(&self, key: &'static str, expected: &'static str, found: &Value) -> AliasError {
        AliasError::BadValue {
            file: self.file.to_owned(),
            key,
            expected,
            found: found.kind().to_owned(),
        }
    }

    fn missing(&self, key: &'static str) -> AliasError {
        AliasError::MissingKey {
            file: self.file.to_owned(),
            key,
        }
    }

    fn opt_str(&self, key: &'static str) -> Result<Option<String>, AliasError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) if s.is_empty() => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.clone())),
            // Numbers are saved as ints or strings depending on the caller; accept both.
            Some(Value::Int(i)) => Ok(Some(i.to_string())),
            Some(v) => Err(self.bad(key, "a string", v)),
        }
    }

    fn str(&self, key: &'static str) -> Result<String, AliasError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// A context reference such as `@server_master`, returned without the `@`.
    fn context_ref(&self, key: &'static str) -> Result<String, AliasError> {
        let s = self.str(key)?;
        Ok(s.strip_prefix('@').map(str::to_owned).unwrap_or(s))
    }

    fn opt_bool(&self, key: &'static str) -> Result<Option<bool>, AliasError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.bad(key, "a boolean", v)))
            .transpose()
    }

    fn bool(&self, key: &'static str) -> Result<bool, AliasError> {
        self.opt_bool(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_port(&self, key: &'static str) -> Result<Option<u16>, AliasError> {
        self.get(key)
            .map(|v| {
                v.as_i64()
                    .and_then(|i| u16::try_from(i).ok())
                    .ok_or_else(|| self.bad(key, "a port number", v))
            })
            .transpose()
    }

    /// A list of strings; absent means empty (older hosts omit empty lists).
    fn str_list(&self, key: &'static str) -> Result<Vec<String>, AliasError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        v.list()
            .and_then(|items| {
                items
                    .into_iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| self.bad(key, "a list of strings", v))
    }
}

/// Reads one alias file. `name` is the file name without `.alias.drushrc.php`, and the file must
/// define exactly `$aliases['<name>']`, so a renamed or hand-merged file is not misattributed.
pub fn read_alias(name: &str, src: &str) -> Result<Context, AliasError> {
    let file = format!("{name}{ALIAS_SUFFIX}");
    let assignments = php::parse_assignments(src).map_err(|source| AliasError::Syntax {
        file: file.clone(),
        source,
    })?;
    let value = match assignments.as_slice() {
        [a] if a.var == "aliases" && a.key == name => &a.value,
        _ => {
            let found = if assignments.is_empty() {
                "nothing".to_owned()
            } else {
                assignments
                    .iter()
                    .map(|a| format!("`${}['{}']`", a.var, a.key))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(AliasError::NameMismatch {
                file,
                expected: name.to_owned(),
                found,
            });
        }
    };
    if !matches!(value, Value::Array(_)) {
        return Err(AliasError::BadValue {
            file,
            key: "$aliases",
            expected: "an array",
            found: value.kind().to_owned(),
        });
    }
    let f = Fields { file: &file, value };
    let name = name.to_owned();
    match f.str("context_type")?.as_str() {
        "server" => server(&f, name).map(Context::Server),
        "platform" => Ok(Context::Platform(PlatformAlias {
            name,
            web_server: f.context_ref("web_server")?,
            root: f.str("root")?,
            makefile: f.opt_str("makefile")?,
        })),
        "site" => site(&f, name).map(Context::Site),
        other => Err(AliasError::UnknownContextType {
            file: file.clone(),
            found: other.to_owned(),
        }),
    }
}

fn server(f: &Fields<'_>, name: String) -> Result<ServerAlias, AliasError> {
    let master_db = match f.opt_str("master_db")? {
        None => None,
        Some(url) => Some(parse_db_url(&url).ok_or_else(|| AliasError::BadValue {
            file: f.file.to_owned(),
            key: "master_db",
            expected: "a URL like mysql://user:password@host",
            // Not the value itself: it holds the DB root password.
            found: "a malformed URL".to_owned(),
        })?),
    };
    Ok(ServerAlias {
        name,
        remote_host: f.str("remote_host")?,
        aegir_root: f.str("aegir_root")?,
        script_user: f.str("script_user")?,
        ip_addresses: f.str_list("ip_addresses")?,
        http_service_type: f.opt_str("http_service_type")?,
        http_port: f.opt_port("http_port")?,
        web_group: f.opt_str("web_group")?,
        db_service_type: f.opt_str("db_service_type")?,
        db_port: f.opt_port("db_port")?,
        master_db,
        config_path: f.str("config_path")?,
        backup_path: f.str("backup_path")?,
    })
}

fn site(f: &Fields<'_>, name: String) -> Result<SiteAlias, AliasError> {
    let redirection = match f.get("redirection") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Str(s)) if s.is_empty() => None,
        Some(Value::Str(s)) => Some(s.clone()),
        Some(v) => return Err(f.bad("redirection", "false or a domain", v)),
    };
    let https_enabled = match f.get("https_enabled") {
        None => 0,
        Some(v) => match v.as_i64() {
            Some(n @ 0..=2) => n as u8,
            _ => return Err(f.bad("https_enabled", "0, 1 or 2", v)),
        },
    };
    Ok(SiteAlias {
        name,
        uri: f.str("uri")?,
        platform: f.context_ref("platform")?,
        db_server: f.context_ref("db_server")?,
        root: f.str("root")?,
        site_path: f.str("site_path")?,
        site_enabled: f.bool("site_enabled")?,
        language: f.str("language")?,
        client_name: f.opt_str("client_name")?,
        aliases: f.str_list("aliases")?,
        redirection,
        profile: f.str("profile")?,
        https_enabled,
        https_key: f.opt_str("https_key")?,
        drush_aliases: f.str_list("drush_aliases")?,
    })
}

/// Splits `scheme://user:pass@host[:port][/...]`, percent-decoding the parts.
fn parse_db_url(url: &str) -> Option<DbUrl> {
    let (scheme, rest) = url.split_once("://")?;
    // The last `@` separates credentials: an unencoded `@` in a password is then still read.
    let (userinfo, hostport) = rest.rsplit_once('@')?;
    let hostport = hostport.split('/').next().unwrap_or_default();
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    let host = percent_decode(host, true)?;
    if host.is_empty() || scheme.is_empty() {
        return None;
    }
    Some(DbUrl {
        scheme: scheme.to_owned(),
        user: percent_decode(user, true)?,
        password: Secret(percent_decode(password, true)?),
        host,
        port,
    })
}

/// Undoes percent-encoding. PHP's `urlencode` (the alias files) also writes a space as `+`
/// (a literal `+` is always `%2B`): `plus_is_space` says whether to read it so.
pub(super) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Reads a site's `drushrc.php`: the `$options[...]` it sets (the last one of a key wins, as in
/// PHP); other variables are ignored.
pub fn read_site_drushrc(src: &str) -> Result<SiteDrushrc, AliasError> {
    let file = "drushrc.php";
    let assignments = php::parse_assignments(src).map_err(|source| AliasError::Syntax {
        file: file.to_owned(),
        source,
    })?;
    let options = Value::Array(
        assignments
            .into_iter()
            .filter(|a| a.var == "options")
            .map(|a| (php::Key::Str(a.key), a.value))
            .collect(),
    );
    let f = Fields {
        file,
        value: &options,
    };
    Ok(SiteDrushrc {
        db_type: f.str("db_type")?,
        db_host: f.str("db_host")?,
        db_port: f.opt_port("db_port")?.ok_or_else(|| f.missing("db_port"))?,
        db_user: f.str("db_user")?,
        // An empty password is possible for a local socket login.
        db_password: Secret(f.opt_str("db_passwd")?.unwrap_or_default()),
        db_name: f.str("db_name")?,
        installed: f.opt_bool("installed")?.unwrap_or(false),
        profile: f.opt_str("profile")?,
        language: f.opt_str("language")?,
    })
}

/// A file that could not be read, and why.
pub type FileError = (PathBuf, AliasError);

/// Reads every `*.alias.drushrc.php` in `dir`, sorted by file name. A bad file is reported in
/// the second list and the others are still read, so one corrupt file does not block an import.
pub fn read_alias_dir(dir: &Path) -> (Vec<(PathBuf, Context)>, Vec<FileError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let io_err = |path: &Path, source| AliasError::Io {
        path: path.to_owned(),
        source,
    };
    let canonical_dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => {
            bad.push((dir.to_owned(), io_err(dir, e)));
            return (ok, bad);
        }
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            bad.push((dir.to_owned(), io_err(dir, e)));
            return (ok, bad);
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let file_name = entry.file_name();
                let Some(name) = file_name
                    .to_str()
                    .and_then(|n| n.strip_suffix(ALIAS_SUFFIX))
                    .filter(|n| !n.is_empty())
                else {
                    continue;
                };
                files.push((name.to_owned(), entry.path()));
            }
            Err(e) => bad.push((dir.to_owned(), io_err(dir, e))),
        }
    }
    files.sort();
    for (name, path) in files {
        match read_one(&canonical_dir, &name, &path) {
            Ok(ctx) => ok.push((path, ctx)),
            Err(e) => bad.push((path, e)),
        }
    }
    (ok, bad)
}

fn read_one(canonical_dir: &Path, name: &str, path: &Path) -> Result<Context, AliasError> {
    let io_err = |source| AliasError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(io_err)?;
    if meta.file_type().is_symlink() {
        // drush follows symlinks, but an import must not be steered to read arbitrary files.
        let target = path.canonicalize().map_err(io_err)?;
        if target.parent() != Some(canonical_dir) {
            return Err(AliasError::SymlinkOutside {
                path: path.to_owned(),
            });
        }
    }
    let file = fs::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(AliasError::NotAFile {
            path: path.to_owned(),
        });
    }
    let limit = php::MAX_FILE_SIZE as u64;
    if meta.len() > limit {
        return Err(AliasError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    // Read at most one byte past the limit, in case the file grows after the size check.
    let mut src = String::new();
    file.take(limit + 1)
        .read_to_string(&mut src)
        .map_err(io_err)?;
    read_alias(name, &src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> String {
        crate::import::test_fixtures()
    }

    fn drush_dir() -> PathBuf {
        PathBuf::from(format!("{}drush", fixtures()))
    }

    fn fixture(name: &str) -> Context {
        let src = fs::read_to_string(drush_dir().join(format!("{name}{ALIAS_SUFFIX}"))).unwrap();
        read_alias(name, &src).unwrap()
    }

    fn site(name: &str) -> SiteAlias {
        match fixture(name) {
            Context::Site(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn drushrc(uri: &str) -> SiteDrushrc {
        let src =
            fs::read_to_string(format!("{}site_drushrc/{uri}.drushrc.php", fixtures())).unwrap();
        read_site_drushrc(&src).unwrap()
    }

    #[test]
    fn reads_the_whole_fixture_directory() {
        let (ok, bad) = read_alias_dir(&drush_dir());
        assert!(bad.is_empty(), "{bad:?}");
        let names: Vec<_> = ok.iter().map(|(_, c)| c.name()).collect();
        assert_eq!(
            names,
            [
                "blog.example.com",
                "intranet.example.org",
                "legacy.example.org",
                "platform_Drupal1026",
                "platform_Drupal7100",
                "platform_Drupal9511",
                "server_master",
                "server_web2examplecom",
                "staging.example.com",
                "www.example.com",
            ]
        );
        let count = |f: fn(&Context) -> bool| ok.iter().filter(|(_, c)| f(c)).count();
        assert_eq!(count(|c| matches!(c, Context::Server(_))), 2);
        assert_eq!(count(|c| matches!(c, Context::Platform(_))), 3);
        assert_eq!(count(|c| matches!(c, Context::Site(_))), 5);
    }

    #[test]
    fn server_fixtures() {
        let Context::Server(web2) = fixture("server_web2examplecom") else {
            panic!()
        };
        assert_eq!(web2.remote_host, "web2.example.com");
        assert_eq!(web2.http_service_type.as_deref(), Some("apache"));
        assert_eq!(web2.web_group.as_deref(), Some("www-data"));
        assert_eq!(web2.http_port, Some(80));
        assert_eq!(web2.ip_addresses, ["192.0.2.20"]);
        assert_eq!(web2.config_path, "/var/aegir/config/server_web2examplecom");
        assert_eq!(web2.aegir_root, "/var/aegir");
        assert_eq!(web2.script_user, "aegir");
        assert_eq!(web2.db_service_type, None);
        assert_eq!(web2.master_db, None);

        let Context::Server(master) = fixture("server_master") else {
            panic!()
        };
        assert_eq!(master.http_service_type.as_deref(), Some("https_nginx"));
        assert_eq!(master.db_port, Some(3306));
        assert_eq!(master.backup_path, "/var/aegir/backups");
        let db = master.master_db.unwrap();
        assert_eq!(db.scheme, "mysql");
        assert_eq!(db.user, "aegir_root");
        assert_eq!(db.password.expose(), "fixture-db-secret");
        assert_eq!(db.host, "localhost");
        assert_eq!(db.port, None);
    }

    #[test]
    fn platform_fixtures() {
        let Context::Platform(p) = fixture("platform_Drupal7100") else {
            panic!()
        };
        assert_eq!(p.web_server, "server_web2examplecom");
        assert_eq!(p.root, "/var/aegir/platforms/drupal-7.100");
        assert_eq!(p.makefile, None);
    }

    #[test]
    fn site_fixtures() {
        let www = site("www.example.com");
        assert_eq!(www.uri, "www.example.com");
        assert_eq!(www.platform, "platform_Drupal1026");
        assert_eq!(www.db_server, "server_master");
        assert_eq!(www.root, "/var/aegir/platforms/drupal-10.2.6/web");
        assert_eq!(
            www.site_path,
            "/var/aegir/platforms/drupal-10.2.6/web/sites/www.example.com"
        );
        assert!(www.site_enabled);
        assert_eq!(www.aliases, ["example.com"]);
        assert_eq!(www.redirection.as_deref(), Some("www.example.com"));
        assert_eq!(www.https_enabled, 2);
        assert_eq!(www.https_key.as_deref(), Some("www.example.com"));
        assert_eq!(www.profile, "standard");
        assert_eq!(www.client_name.as_deref(), Some("admin"));
        assert!(www.drush_aliases.is_empty());

        let legacy = site("legacy.example.org");
        assert_eq!(legacy.redirection, None);
        assert_eq!(
            legacy.aliases,
            ["legacy.example.net", "www.legacy.example.org"]
        );
        assert_eq!(legacy.https_key, None);

        let intranet = site("intranet.example.org");
        assert!(!intranet.site_enabled);
        assert_eq!(intranet.language, "de");
        assert_eq!(intranet.https_enabled, 0);
    }

    #[test]
    fn site_drushrc_fixtures() {
        let www = drushrc("www.example.com");
        assert_eq!(www.db_name, "examplecom_0");
        assert_eq!(www.db_user, "examplecom_0");
        assert_eq!(www.db_port, 3306);
        assert_eq!(www.db_type, "mysql");
        assert_eq!(www.db_host, "localhost");
        assert_eq!(www.db_password.expose(), "Wq7pX2vN9kLm");
        assert!(www.installed);
        assert_eq!(www.profile.as_deref(), Some("standard"));
        assert_eq!(
            drushrc("intranet.example.org").language.as_deref(),
            Some("de")
        );
        for uri in [
            "blog.example.com",
            "legacy.example.org",
            "staging.example.com",
        ] {
            drushrc(uri);
        }
    }

    #[test]
    fn passwords_are_not_in_debug_output() {
        let www = drushrc("www.example.com");
        let dbg = format!("{www:?}");
        assert!(!dbg.contains("Wq7pX2vN9kLm"), "{dbg}");
        assert!(dbg.contains("***"));
        let Context::Server(master) = fixture("server_master") else {
            panic!()
        };
        let dbg = format!("{master:?}");
        assert!(!dbg.contains("fixture-db-secret"), "{dbg}");
    }

    #[test]
    fn master_db_is_percent_decoded() {
        let db = parse_db_url("mysql://r%40ot:p%3Aa%2Bss+word@db.example.com:3307").unwrap();
        assert_eq!(db.user, "r@ot");
        assert_eq!(db.password.expose(), "p:a+ss word");
        assert_eq!(db.host, "db.example.com");
        assert_eq!(db.port, Some(3307));
        let db = parse_db_url("mysql://u:p@[::1]:3306").unwrap();
        assert_eq!((db.host.as_str(), db.port), ("::1", Some(3306)));
        for bad in [
            "localhost",
            "mysql://u:p@",
            "mysql://u:p@h:x",
            "mysql://u:%zz@h",
        ] {
            assert!(parse_db_url(bad).is_none(), "{bad}");
        }
    }

    const SITE: &str =
        "<?php\n$aliases['s.example.com'] = array (\n  'context_type' => 'site',\n  \
        'platform' => '@platform_X',\n  'db_server' => '@server_master',\n  'uri' => \
        's.example.com',\n  'root' => '/r',\n  'site_path' => '/r/sites/s.example.com',\n  \
        'site_enabled' => '1',\n  'language' => 'en',\n  'profile' => 'minimal',\n  'extra' => \
        array ( 'nested' => array ( -1 => -5 ) ),\n  ";

    fn site_with(extra: &str) -> Result<Context, AliasError> {
        read_alias("s.example.com", &format!("{SITE}{extra});"))
    }

    #[test]
    fn loose_values_nulls_and_defaults() {
        let Context::Site(s) = site_with(
            "'client_name' => 'null', 'https_key' => 'null', 'https_enabled' => '1', \
             'redirection' => NULL,",
        )
        .unwrap() else {
            panic!()
        };
        assert!(s.site_enabled);
        assert_eq!(s.client_name, None);
        assert_eq!(s.https_key, None);
        assert_eq!(s.https_enabled, 1);
        assert_eq!(s.redirection, None);
        assert!(s.aliases.is_empty());
        assert_eq!(s.platform, "platform_X");
    }

    #[test]
    fn bad_values_are_errors_naming_key_and_file() {
        let err = site_with("'https_enabled' => 3,").unwrap_err();
        assert!(
            matches!(
                err,
                AliasError::BadValue {
                    key: "https_enabled",
                    ..
                }
            ),
            "{err}"
        );
        let err = site_with("'uri' => 'null',").unwrap_err();
        assert_eq!(
            err.to_string(),
            "s.example.com.alias.drushrc.php: missing required key `uri`"
        );
        let err = site_with("'site_enabled' => 'maybe',").unwrap_err();
        assert!(
            matches!(
                err,
                AliasError::BadValue {
                    key: "site_enabled",
                    ..
                }
            ),
            "{err}"
        );
        let err = site_with("'aliases' => array ( 0 => 1 ),").unwrap_err();
        assert!(
            matches!(err, AliasError::BadValue { key: "aliases", .. }),
            "{err}"
        );
        let err = site_with("'redirection' => true,").unwrap_err();
        assert!(
            matches!(
                err,
                AliasError::BadValue {
                    key: "redirection",
                    ..
                }
            ),
            "{err}"
        );
        let err = site_with("'context_type' => 'client',").unwrap_err();
        assert!(
            matches!(err, AliasError::UnknownContextType { .. }),
            "{err}"
        );

        let err = read_alias(
            "server_master",
            "<?php $aliases['server_master'] = array ( 'context_type' => 'server', \
             'remote_host' => 'h', 'aegir_root' => '/a', 'script_user' => 'aegir', \
             'config_path' => '/c', 'backup_path' => '/b', 'master_db' => 'nonsense-secret', );",
        )
        .unwrap_err();
        assert!(matches!(
            err,
            AliasError::BadValue {
                key: "master_db",
                ..
            }
        ));
        assert!(!err.to_string().contains("nonsense-secret"));
    }

    #[test]
    fn alias_name_must_match_file_name() {
        let src =
            fs::read_to_string(drush_dir().join("www.example.com.alias.drushrc.php")).unwrap();
        let err = read_alias("hm", &src).unwrap_err();
        assert!(matches!(err, AliasError::NameMismatch { .. }), "{err}");
        let err = read_alias("x", "<?php $options['x'] = 1;").unwrap_err();
        assert!(matches!(err, AliasError::NameMismatch { .. }), "{err}");
        let err = read_alias("x", "<?php $aliases['x'] = 1;").unwrap_err();
        assert!(matches!(err, AliasError::BadValue { .. }), "{err}");
    }

    #[test]
    fn corrupt_file_is_reported_and_the_rest_read() {
        let tmp = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(drush_dir()).unwrap() {
            let p = entry.unwrap().path();
            fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
        }
        let corrupt = tmp.path().join("broken.example.com.alias.drushrc.php");
        fs::write(
            &corrupt,
            "<?php\n$aliases['broken.example.com'] = array (\n  'uri' => ",
        )
        .unwrap();
        let large = tmp.path().join("large.alias.drushrc.php");
        fs::write(&large, vec![b' '; php::MAX_FILE_SIZE + 1]).unwrap();
        fs::write(tmp.path().join("README.txt"), "not an alias").unwrap();

        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("evil.alias.drushrc.php");
        fs::copy(drush_dir().join("server_master.alias.drushrc.php"), &target).unwrap();
        let evil = tmp.path().join("evil.alias.drushrc.php");
        std::os::unix::fs::symlink(&target, &evil).unwrap();
        // A symlink inside the directory (as drush_aliases copies may be) is followed.
        std::os::unix::fs::symlink(
            tmp.path().join("server_master.alias.drushrc.php"),
            tmp.path().join("server_master2.alias.drushrc.php"),
        )
        .unwrap();

        let (ok, bad) = read_alias_dir(tmp.path());
        assert_eq!(ok.len(), 10, "{bad:?}");
        let bad_names: Vec<_> = bad
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            bad_names,
            [
                "broken.example.com.alias.drushrc.php",
                "evil.alias.drushrc.php",
                "large.alias.drushrc.php",
                "server_master2.alias.drushrc.php",
            ]
        );
        assert!(matches!(bad[0].1, AliasError::Syntax { .. }));
        assert!(matches!(bad[1].1, AliasError::SymlinkOutside { .. }));
        assert!(matches!(bad[2].1, AliasError::TooLarge { .. }));
        // The in-directory symlink is read, but defines `server_master`, not `server_master2`.
        assert!(matches!(bad[3].1, AliasError::NameMismatch { .. }));
        assert!(bad[0].1.to_string().contains("line 3"), "{}", bad[0].1);
    }

    #[test]
    fn missing_directory_is_an_error_not_a_panic() {
        let (ok, bad) = read_alias_dir(Path::new("/nonexistent/aegir/.drush"));
        assert!(ok.is_empty());
        assert_eq!(bad.len(), 1);
    }
}
