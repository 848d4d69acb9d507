//! Reading an Aegir 3 installation from where it lives: its Aegir root (alias files, sites'
//! drushrc.php) and its hostmaster database, found from the root unless given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::alias::{self, Context};
use super::hostmaster::{self, SiteStatus};
use super::plan::Source;
use super::ImportError;

/// Aegir 3's own root, as its paths spell it; `/var/aegir` unless server_master says other.
pub fn aegir3_root(contexts: &[(PathBuf, Context)]) -> String {
    contexts
        .iter()
        .find_map(|(_, c)| match c {
            Context::Server(s) if s.name == "server_master" && !s.aegir_root.is_empty() => {
                Some(s.aegir_root.trim_end_matches('/').to_string())
            }
            _ => None,
        })
        .unwrap_or_else(|| "/var/aegir".to_string())
}

/// `path` as seen from here: Aegir 3's root `old` replaced by `root`.
pub fn rebase(old: &str, root: &Path, path: &str) -> String {
    let root = root.to_string_lossy();
    match path.strip_prefix(old) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", root.trim_end_matches('/'))
        }
        _ => path.to_string(),
    }
}

fn url_component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The hostmaster database URL from the front end's own `sites/<fqdn>/drushrc.php`, which
/// its `hostmaster` alias points at.
fn discover_hostmaster(
    root: &Path,
    old_root: &str,
    contexts: &[(PathBuf, Context)],
) -> Result<String, ImportError> {
    let site = contexts.iter().find_map(|(_, c)| match c {
        Context::Site(s) if s.name == "hostmaster" || s.drush_aliases.iter().any(|a| a == "hm") => {
            Some(s)
        }
        _ => None,
    });
    let Some(site) = site else {
        return Err(ImportError::NoHostmaster(format!(
            "no hostmaster alias in {}/.drush; give the database with --hostmaster-db mysql://USER:PASS@HOST/DB",
            root.display()
        )));
    };
    let file = format!("{}/drushrc.php", rebase(old_root, root, &site.site_path));
    let text = std::fs::read_to_string(&file).map_err(|e| {
        ImportError::NoHostmaster(format!(
            "cannot read the front end's {file}: {e}; give --hostmaster-db"
        ))
    })?;
    let rc = alias::read_site_drushrc(&text)
        .map_err(|e| ImportError::NoHostmaster(format!("{file}: {e}; give --hostmaster-db")))?;
    let port = if rc.db_port == 0 { 3306 } else { rc.db_port };
    Ok(format!(
        "mysql://{}:{}@{}:{port}/{}",
        url_component(&rc.db_user),
        url_component(rc.db_password.expose()),
        rc.db_host,
        url_component(&rc.db_name)
    ))
}

/// Names the installation by its database's place (host, port, name), without credentials
/// or options, so imports with another user or socket path still recognise it.
pub fn source_id(url: &str) -> String {
    let no_query = url.split('?').next().unwrap_or(url);
    let (scheme, rest) = no_query.split_once("://").unwrap_or(("mysql", no_query));
    let place = rest.rsplit_once('@').map(|(_, p)| p).unwrap_or(rest);
    format!("aegir3+{scheme}://{place}")
}

/// Reads everything an import maps. Only a missing root or an unreadable hostmaster database
/// stops it: a bad file is a line of the report.
pub async fn gather(hostmaster_db: Option<&str>, root: &Path) -> Result<Source, ImportError> {
    let meta = std::fs::metadata(root)
        .map_err(|e| ImportError::Root(format!("{}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(ImportError::Root(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let drush = root.join(".drush");
    let (contexts, file_errors) = {
        let drush = drush.clone();
        tokio::task::spawn_blocking(move || alias::read_alias_dir(&drush))
            .await
            .map_err(|e| ImportError::Root(e.to_string()))?
    };
    let old_root = aegir3_root(&contexts);
    let url = match hostmaster_db {
        Some(u) => u.to_string(),
        None => discover_hostmaster(root, &old_root, &contexts)?,
    };
    let snapshot = hostmaster::read(&url).await?;

    // Each live site's drushrc.php: under its alias's site_path, else the platform's sites/.
    let mut wanted: Vec<(String, String)> = Vec::new();
    for s in &snapshot.sites {
        if !matches!(
            s.state(),
            Some(SiteStatus::Enabled) | Some(SiteStatus::Disabled)
        ) {
            continue;
        }
        let from_alias = contexts.iter().find_map(|(_, c)| match c {
            Context::Site(a) if Some(a.name.as_str()) == s.context.as_deref() => {
                Some(a.site_path.clone())
            }
            _ => None,
        });
        let site_path = from_alias.or_else(|| {
            snapshot
                .platforms
                .iter()
                .find(|p| p.nid == s.platform)
                .map(|p| format!("{}/sites/{}", p.publish_path, s.uri))
        });
        if let Some(p) = site_path {
            wanted.push((s.uri.clone(), rebase(&old_root, root, &p)));
        }
    }
    let drushrc = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for (uri, dir) in wanted {
            let file = format!("{dir}/drushrc.php");
            let read = match std::fs::read_to_string(&file) {
                Ok(text) => alias::read_site_drushrc(&text).map_err(|e| format!("{file}: {e}")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(format!("no drushrc.php at {file}"))
                }
                Err(e) => Err(format!("{file}: {e}")),
            };
            out.insert(uri, read);
        }
        out
    })
    .await
    .map_err(|e| ImportError::Root(e.to_string()))?;

    Ok(Source {
        id: source_id(&url),
        root: root.to_path_buf(),
        snapshot,
        contexts,
        file_errors,
        drushrc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_move_to_the_given_root() {
        let root = Path::new("/tmp/x/");
        assert_eq!(
            rebase("/var/aegir", root, "/var/aegir/backups/a"),
            "/tmp/x/backups/a"
        );
        assert_eq!(rebase("/var/aegir", root, "/var/aegir"), "/tmp/x");
        assert_eq!(rebase("/var/aegir", root, "/var/aegirx/a"), "/var/aegirx/a");
        assert_eq!(rebase("/var/aegir", root, "/srv/www"), "/srv/www");
    }

    #[test]
    fn the_installation_is_named_without_credentials() {
        assert_eq!(
            source_id("mysql://aegir:s3cr%40t@db.example.com:3306/hostmaster?socket=/x"),
            "aegir3+mysql://db.example.com:3306/hostmaster"
        );
        assert_eq!(
            source_id("mysql://root@localhost/h"),
            "aegir3+mysql://localhost/h"
        );
    }
}
