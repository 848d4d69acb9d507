//! Where aegird puts things on a server it hosts sites on, and the names it gives them: the
//! one place that knows the on-host layout (Aegir 3's own layout under /var/aegir/config is
//! left to servers imported from it).

use crate::model::AppKind;

/// aegird's configuration on a server: its nginx vhosts and the disabled-site page.
pub const ETC_DIR: &str = "/etc/aegir";
/// The directory of vhosts aegird owns; nginx includes every `*.conf` in it.
pub const VHOST_DIR: &str = "/etc/aegir/nginx/vhosts";
/// Held (flock) while the vhost directory changes and nginx is tested and reloaded, so two
/// operations (or two daemons) never test each other's half-written config.
pub const NGINX_LOCK: &str = "/etc/aegir/nginx/.lock";
/// The one file aegird adds to nginx's own configuration.
pub const NGINX_INCLUDE: &str = "/etc/nginx/conf.d/aegir.conf";
/// The page every request to a disabled site gets.
pub const DISABLED_DIR: &str = "/etc/aegir/nginx/disabled";
/// Shared by every site for ACME http-01 challenges (the HTTPS work writes here).
pub const ACME_DIR: &str = "/var/aegir/acme-challenge";
/// Per-site data outside the codebase: secrets, files, private files.
pub const SITES_DIR: &str = "/var/aegir/sites";
/// Debian's WordPress reads `config-<name>.php` from here.
pub const WORDPRESS_CONFIG_DIR: &str = "/etc/wordpress";
/// The group the web server and PHP run as: it may write files directories, nothing else.
pub const WEB_GROUP: &str = "www-data";

/// aegird's php-fpm pool for one PHP version.
pub fn pool_file(php: &str) -> String {
    format!("/etc/php/{php}/fpm/pool.d/aegir.conf")
}

pub fn pool_socket(php: &str) -> String {
    format!("/run/php/aegir-php{php}-fpm.sock")
}

/// Debian's php-fpm pid file, through which a running php-fpm is reloaded without systemd.
pub fn fpm_pid_file(php: &str) -> String {
    format!("/run/php/php{php}-fpm.pid")
}

/// A database (and user) name for a new environment: readable, at most 32 characters (the
/// MySQL user name limit), and unique by its random suffix. It doubles as the environment's
/// key on the host: every file aegird writes for the site carries it, so undo and delete
/// remove only what this environment made.
pub fn new_db_name(uri: &str) -> String {
    let stem: String = uri
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    let suffix: u32 = rand::random();
    format!("{stem}_{suffix:08x}")
}

/// Everything about one site's place on its server.
#[derive(Debug, Clone)]
pub struct Site {
    pub uri: String,
    pub aliases: Vec<String>,
    pub redirect_aliases: bool,
    /// Database and user name, and the site's key on the host.
    pub key: String,
    pub app: AppKind,
    /// The release's codebase root, and its docroot below it ("" for the root itself).
    pub root: String,
    pub docroot: String,
    pub php: String,
}

impl Site {
    pub fn dir(&self) -> String {
        format!("{SITES_DIR}/{}", self.uri)
    }
    /// Names the environment a site directory belongs to.
    pub fn marker(&self) -> String {
        format!("{}/.aegir-env", self.dir())
    }
    /// Only root reads it: the database password and the application's salts.
    pub fn secrets_file(&self) -> String {
        format!("{}/secrets.json", self.dir())
    }
    pub fn files_dir(&self) -> String {
        format!("{}/files", self.dir())
    }
    pub fn private_dir(&self) -> String {
        format!("{}/private", self.dir())
    }
    /// Where a delete moves the site directory while it can still be undone.
    pub fn dir_aside(&self) -> String {
        format!("{SITES_DIR}/.deleting-{}", self.key)
    }
    pub fn vhost_file(&self) -> String {
        format!("{VHOST_DIR}/{}.conf", self.uri)
    }
    /// Not matched by nginx's `*.conf` include: a vhost taken offline by a delete.
    pub fn vhost_aside(&self) -> String {
        format!("{VHOST_DIR}/{}.conf.deleting-{}", self.uri, self.key)
    }
    pub fn docroot_path(&self) -> String {
        if self.docroot.is_empty() {
            self.root.trim_end_matches('/').to_string()
        } else {
            format!("{}/{}", self.root.trim_end_matches('/'), self.docroot)
        }
    }
    /// Drupal's per-site directory in the codebase (`sites/<uri>`), as multisite wants it.
    pub fn drupal_site_dir(&self) -> String {
        format!("{}/sites/{}", self.docroot_path(), self.uri)
    }
    /// Where a takeover builds aegird's `sites/<uri>` beside the one Aegir 3 still serves
    /// (a dot name: no host name matches it, and Aegir 3 does not import it as a site).
    pub fn drupal_site_staged(&self) -> String {
        format!("{}/sites/.takeover-{}", self.docroot_path(), self.key)
    }
    pub fn drupal_site_aside(&self) -> String {
        format!("{}/sites/.deleting-{}", self.docroot_path(), self.key)
    }
    /// Debian's wp-config.php picks this file when nginx passes WORDPRESS_CONFIG.
    pub fn wordpress_config_name(&self) -> String {
        format!("aegir-{}", self.key.replace('_', "-"))
    }
    pub fn wordpress_config_file(&self) -> String {
        format!(
            "{WORDPRESS_CONFIG_DIR}/config-{}.php",
            self.wordpress_config_name()
        )
    }
    pub fn wordpress_config_aside(&self) -> String {
        format!("{}.deleting", self.wordpress_config_file())
    }
    pub fn mu_plugins_dir(&self) -> String {
        format!("{}/mu-plugins", self.dir())
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_fit_mysql_and_differ() {
        let a = new_db_name("www.a-very-long-site-name-indeed.example.org");
        let b = new_db_name("www.a-very-long-site-name-indeed.example.org");
        assert!(a.len() <= 32, "{a}");
        assert!(a.starts_with("wwwaverylongsitename_"), "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_ne!(a, b);
    }
}
