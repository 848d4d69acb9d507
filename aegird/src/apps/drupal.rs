//! The Drupal driver: settings.php (credentials from an include aegird keeps outside the
//! codebase), and the drush commands for install, login and cron.

use crate::backend::layout::{Site, WEB_GROUP};
use crate::model::AppKind;

/// The include settings.php reads: credentials and salt, readable by the web group only.
pub fn credentials(site: &Site, db_password: &str, hash_salt: &str) -> String {
    let salt = match site.app {
        AppKind::Drupal7 => format!("$drupal_hash_salt = '{hash_salt}';\n"),
        _ => format!("$settings['hash_salt'] = '{hash_salt}';\n"),
    };
    format!(
        "<?php\n// Written by aegird for {uri} (aegir-env {key}); readable by {WEB_GROUP} only.\n\
         $databases['default']['default'] = array(\n  'driver' => 'mysql',\n  \
         'database' => '{key}',\n  'username' => '{key}',\n  'password' => '{db_password}',\n  \
         'host' => 'localhost',\n  'prefix' => '',\n);\n{salt}",
        uri = site.uri,
        key = site.key,
    )
}

pub fn credentials_file(site: &Site) -> String {
    format!("{}/credentials.php", site.dir())
}

/// `sites/<uri>/settings.php`. Site-specific overrides go in `local.settings.php` next to
/// it (as in Aegir 3), which verify leaves alone.
pub fn settings(site: &Site) -> String {
    let mut out = format!(
        "<?php\n// Written by aegird for {uri} (aegir-env {key}); `aegir env verify` writes it again,\n\
         // so put your own settings in local.settings.php next to this file.\n\
         include '{creds}';\n",
        uri = site.uri,
        key = site.key,
        creds = credentials_file(site),
    );
    let public = format!("sites/{}/files", site.uri);
    match site.app {
        AppKind::Drupal7 => {
            out += &format!(
                "$conf['file_public_path'] = '{public}';\n\
                 $conf['file_private_path'] = '{private}';\n\
                 $conf['file_temporary_path'] = '{private}/tmp';\n",
                private = site.private_dir()
            );
        }
        _ => {
            let hosts: Vec<String> = std::iter::once(&site.uri)
                .chain(&site.aliases)
                .map(|h| format!("'^{}$'", h.replace('.', "\\.")))
                .collect();
            out += &format!(
                "$settings['file_public_path'] = '{public}';\n\
                 $settings['file_private_path'] = '{private}';\n\
                 $settings['file_temp_path'] = '{private}/tmp';\n\
                 $settings['config_sync_directory'] = '{private}/config/sync';\n\
                 $settings['trusted_host_patterns'] = array({});\n",
                hosts.join(", "),
                private = site.private_dir()
            );
        }
    }
    out += "if (file_exists(__DIR__ . '/local.settings.php')) {\n  include __DIR__ . '/local.settings.php';\n}\n";
    out
}

/// Where a release carries drush (a composer project's vendor/bin), if it does.
pub fn drush_candidates(site: &Site) -> Vec<String> {
    let root = site.root.trim_end_matches('/');
    vec![
        format!("{root}/vendor/bin/drush"),
        format!("{}/vendor/bin/drush", site.docroot_path()),
    ]
}

/// Arguments for drush that select this site.
pub fn drush_site_args(site: &Site) -> Vec<String> {
    vec![
        format!("--root={}", site.docroot_path()),
        format!("--uri={}", site.url()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(app: AppKind) -> Site {
        Site {
            uri: "d.test".into(),
            aliases: vec!["www.d.test".into()],
            redirect_aliases: false,
            key: "dtest_0000abcd".into(),
            app,
            root: "/srv/d10".into(),
            docroot: "web".into(),
            php: "8.2".into(),
        }
    }

    #[test]
    fn settings_include_credentials_kept_outside_the_codebase() {
        let s = settings(&site(AppKind::Drupal));
        assert!(s.contains("include '/var/aegir/sites/d.test/credentials.php';"));
        assert!(s.contains("$settings['file_public_path'] = 'sites/d.test/files';"));
        assert!(s.contains("array('^d\\.test$', '^www\\.d\\.test$')"));
        let c = credentials(&site(AppKind::Drupal), "pw", "salt");
        assert!(c.contains("'password' => 'pw'"));
        assert!(c.contains("$settings['hash_salt'] = 'salt';"));
    }

    #[test]
    fn drupal7_uses_conf_and_drupal_hash_salt() {
        let s = settings(&site(AppKind::Drupal7));
        assert!(s.contains("$conf['file_private_path'] = '/var/aegir/sites/d.test/private';"));
        let c = credentials(&site(AppKind::Drupal7), "pw", "salt");
        assert!(c.contains("$drupal_hash_salt = 'salt';"));
        assert_eq!(
            drush_site_args(&site(AppKind::Drupal7)),
            ["--root=/srv/d10/web", "--uri=http://d.test"]
        );
    }
}
