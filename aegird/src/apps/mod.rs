//! Application drivers: what tells Drupal 7, Drupal 8+, WordPress and plain PHP apart, and how
//! each one's version and package set are read. Pure functions over text gathered from the
//! codebase, so backends (local, SSH, later a container image) only fetch files.

pub mod drupal;
pub mod wordpress;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::AppKind;

/// Directories under a codebase's root that may be its web root, most specific first
/// ("" is the root itself).
pub const DOCROOT_CANDIDATES: &[&str] = &["web", "docroot", "html", "public", ""];

/// The file whose presence marks each application, relative to its web root, in the order
/// they are tried (WordPress and Drupal before the generic PHP marker).
pub const MARKERS: &[(AppKind, &str)] = &[
    (AppKind::Wordpress, "wp-includes/version.php"),
    (AppKind::Drupal, "core/lib/Drupal.php"),
    (AppKind::Drupal7, "includes/bootstrap.inc"),
    (AppKind::Php, "index.php"),
];

/// What release verify found about a codebase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Detected {
    pub kind: AppKind,
    pub version: Option<String>,
    /// The web root relative to the codebase root ("" for the root itself).
    pub docroot: String,
}

/// One module, theme, profile, plugin or library in a release.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct Package {
    /// module, theme, profile, theme_engine, plugin, library (composer).
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub version: Option<String>,
    /// Where it was found: composer.lock, info (Drupal .info/.info.yml), wordpress.
    pub source: String,
}

/// Pick the application from the marker files found (`docroot`, `marker path`) pairs.
pub fn detect(found: &[(String, String)]) -> Option<(AppKind, String)> {
    for (kind, marker) in MARKERS {
        for docroot in DOCROOT_CANDIDATES {
            if found.iter().any(|(d, m)| d == docroot && m == marker) {
                return Some((*kind, docroot.to_string()));
            }
        }
    }
    None
}

/// The version line of an application's marker file.
pub fn version(kind: AppKind, marker_text: &str) -> Option<String> {
    let (needle, quote_after) = match kind {
        // $wp_version = '6.1.9';
        AppKind::Wordpress => ("$wp_version", '='),
        // const VERSION = '10.2.6';
        AppKind::Drupal => ("const VERSION", '='),
        // define('VERSION', '7.98');
        AppKind::Drupal7 => ("define('VERSION'", ','),
        AppKind::Php => return None,
    };
    let line = marker_text
        .lines()
        .find(|l| l.trim_start().starts_with(needle))?;
    let rest = line.split_once(quote_after)?.1;
    let v = rest
        .trim()
        .trim_start_matches(['\'', '"'])
        .split(['\'', '"'])
        .next()?
        .trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Packages of a composer.lock (`packages` and `packages-dev`).
pub fn composer_lock(text: &str) -> Result<Vec<Package>, String> {
    #[derive(Deserialize)]
    struct Lock {
        #[serde(default)]
        packages: Vec<Entry>,
        #[serde(default, rename = "packages-dev")]
        packages_dev: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        name: String,
        version: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let lock: Lock =
        serde_json::from_str(text).map_err(|e| format!("composer.lock is not valid: {e}"))?;
    Ok(lock
        .packages
        .into_iter()
        .chain(lock.packages_dev)
        .map(|e| Package {
            kind: match e.kind.as_deref() {
                Some("drupal-module") => "module".into(),
                Some("drupal-theme") => "theme".into(),
                Some("drupal-profile") => "profile".into(),
                Some("drupal-core") => "core".into(),
                Some("wordpress-plugin") => "plugin".into(),
                Some("wordpress-theme") => "theme".into(),
                _ => "library".into(),
            },
            name: e.name,
            version: e.version,
            source: "composer.lock".into(),
        })
        .collect())
}

/// Drupal packages from `grep -H` output over .info and .info.yml files: lines like
/// `modules/views/views.info:version = "7.x-3.29"` or `core/modules/node/node.info.yml:type: module`.
pub fn drupal_info(grep_output: &str) -> Vec<Package> {
    use std::collections::BTreeMap;
    // file -> (type, name, version)
    let mut files: BTreeMap<&str, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut types: BTreeMap<&str, String> = BTreeMap::new();
    for line in grep_output.lines() {
        let Some((file, kv)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = match kv.split_once(['=', ':']) {
            Some((k, v)) => (k.trim(), unquote(v.trim())),
            None => continue,
        };
        let entry = files.entry(file).or_default();
        match key {
            // Core's own .info files say "version: VERSION" until packaging fills it in.
            "version" if !value.is_empty() && value != "VERSION" => entry.1 = Some(value),
            "type" => {
                types.insert(file, value);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (file, (_, version)) in files {
        let base = file.rsplit('/').next().unwrap_or(file);
        let name = base
            .strip_suffix(".info.yml")
            .or_else(|| base.strip_suffix(".info"))
            .unwrap_or(base)
            .to_string();
        // D7 .info files have no type: the directory they sit under tells it.
        let kind = types.get(file).cloned().unwrap_or_else(|| {
            if file.contains("/themes/") || file.starts_with("themes/") {
                "theme".into()
            } else if file.contains("/profiles/") || file.starts_with("profiles/") {
                "profile".into()
            } else {
                "module".into()
            }
        });
        out.push(Package {
            kind,
            name,
            version,
            source: "info".into(),
        });
    }
    out.sort();
    out.dedup();
    out
}

/// WordPress plugins and themes from `grep -H` over plugin main files and theme style.css:
/// `wp-content/plugins/akismet/akismet.php:Version: 5.0.2`.
pub fn wordpress_headers(grep_output: &str) -> Vec<Package> {
    use std::collections::BTreeMap;
    // Per file, since a plugin's other PHP files may carry "Version:" lines of their own:
    // file -> (kind, name, has a name header, version)
    let mut files: BTreeMap<&str, (&str, String, bool, Option<String>)> = BTreeMap::new();
    for line in grep_output.lines() {
        let Some((file, header)) = line.split_once(':') else {
            continue;
        };
        let parts: Vec<&str> = file.split('/').collect();
        let (kind, name) = match parts.iter().position(|p| *p == "plugins" || *p == "themes") {
            Some(i) if i + 1 < parts.len() => (
                if parts[i] == "plugins" {
                    "plugin"
                } else {
                    "theme"
                },
                parts[i + 1].to_string(),
            ),
            _ => continue,
        };
        let header = header.trim_start_matches([' ', '*', '\t']);
        let Some((key, value)) = header.split_once(':') else {
            continue;
        };
        let entry = files.entry(file).or_insert((kind, name, false, None));
        match key.trim() {
            "Plugin Name" | "Theme Name" => entry.2 = true,
            "Version" => entry.3 = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut out: Vec<Package> = files
        .into_values()
        // Only a plugin's main file (or a theme's style.css) has the name header.
        .filter(|(_, _, named, _)| *named)
        .map(|(kind, name, _, version)| Package {
            kind: kind.to_string(),
            name,
            version,
            source: "wordpress".into(),
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.kind == b.kind && a.name == b.name);
    out
}

fn unquote(v: &str) -> String {
    v.trim_matches(|c| c == '"' || c == '\'').trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(d, m)| (d.to_string(), m.to_string()))
            .collect()
    }

    #[test]
    fn detects_the_application_and_its_docroot() {
        let wp = found(&[("", "wp-includes/version.php"), ("", "index.php")]);
        assert_eq!(detect(&wp), Some((AppKind::Wordpress, "".into())));
        let d10 = found(&[("web", "core/lib/Drupal.php"), ("web", "index.php")]);
        assert_eq!(detect(&d10), Some((AppKind::Drupal, "web".into())));
        let d7 = found(&[("", "includes/bootstrap.inc"), ("", "index.php")]);
        assert_eq!(detect(&d7), Some((AppKind::Drupal7, "".into())));
        assert_eq!(
            detect(&found(&[("public", "index.php")])),
            Some((AppKind::Php, "public".into()))
        );
        assert_eq!(detect(&[]), None);
    }

    #[test]
    fn reads_versions() {
        assert_eq!(
            version(AppKind::Wordpress, "<?php\n$wp_version = '6.1.9';\n").as_deref(),
            Some("6.1.9")
        );
        assert_eq!(
            version(
                AppKind::Drupal,
                "class Drupal {\n  const VERSION = '10.2.6';\n"
            )
            .as_deref(),
            Some("10.2.6")
        );
        assert_eq!(
            version(AppKind::Drupal7, "define('VERSION', '7.98');\n").as_deref(),
            Some("7.98")
        );
        assert_eq!(version(AppKind::Drupal, "nothing"), None);
    }

    #[test]
    fn reads_composer_locks() {
        let lock = r#"{"packages":[{"name":"drupal/core","version":"10.2.6","type":"drupal-core"},
            {"name":"drupal/token","version":"1.13.0","type":"drupal-module"},
            {"name":"symfony/console","version":"v6.4.4","type":"library"}],
            "packages-dev":[{"name":"phpunit/phpunit","version":"9.6.17"}]}"#;
        let p = composer_lock(lock).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            (p[1].kind.as_str(), p[1].name.as_str()),
            ("module", "drupal/token")
        );
        assert_eq!(p[3].kind, "library");
        assert!(composer_lock("{not json").is_err());
    }

    #[test]
    fn reads_drupal_info_files() {
        let out = "sites/all/modules/views/views.info:name = Views\n\
                   sites/all/modules/views/views.info:version = \"7.x-3.29\"\n\
                   sites/all/modules/views/views.info:core = 7.x\n\
                   themes/bartik/bartik.info:name = Bartik\n\
                   themes/bartik/bartik.info:version = \"7.98\"\n\
                   web/core/modules/node/node.info.yml:name: Node\n\
                   web/core/modules/node/node.info.yml:type: module\n\
                   web/core/modules/node/node.info.yml:version: VERSION\n\
                   web/modules/contrib/token/token.info.yml:type: module\n\
                   web/modules/contrib/token/token.info.yml:version: '8.x-1.13'\n";
        let p = drupal_info(out);
        let get = |n: &str| p.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(get("views").version.as_deref(), Some("7.x-3.29"));
        assert_eq!(get("views").kind, "module");
        assert_eq!(get("bartik").kind, "theme");
        assert_eq!(get("token").version.as_deref(), Some("8.x-1.13"));
        assert_eq!(get("node").kind, "module");
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn reads_wordpress_headers() {
        let out = "wp-content/plugins/akismet/akismet.php:Plugin Name: Akismet Anti-Spam\n\
                   wp-content/plugins/akismet/akismet.php:Version: 5.0.2\n\
                   wp-content/plugins/akismet/class.akismet.php:Version: 9\n\
                   wp-content/themes/twentytwentythree/style.css:Theme Name: Twenty Twenty-Three\n\
                   wp-content/themes/twentytwentythree/style.css:Version: 1.0\n";
        let p = wordpress_headers(out);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].name, "akismet");
        assert_eq!(p[0].version.as_deref(), Some("5.0.2"));
        assert_eq!(
            (p[1].kind.as_str(), p[1].name.as_str()),
            ("theme", "twentytwentythree")
        );
    }
}
