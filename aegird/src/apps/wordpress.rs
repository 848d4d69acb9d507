//! The WordPress driver: the per-site configuration Debian's wordpress package reads, and the
//! PHP run on the host to install a site, mint a one-time login and run cron.

use crate::backend::layout::Site;

/// The per-site config, read by Debian's wp-config.php through WORDPRESS_CONFIG. `salts`
/// are the eight WordPress keys and salts, kept in the site's secrets file.
pub fn config(site: &Site, db_password: &str, salts: &[String]) -> String {
    const SALT_NAMES: [&str; 8] = [
        "AUTH_KEY",
        "SECURE_AUTH_KEY",
        "LOGGED_IN_KEY",
        "NONCE_KEY",
        "AUTH_SALT",
        "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT",
        "NONCE_SALT",
    ];
    let mut out = format!(
        "<?php\n// Written by aegird for {uri} (aegir-env {key}); `aegir env verify` writes it again,\n\
         // so edits here do not last.\n\
         define('DB_NAME', '{key}');\ndefine('DB_USER', '{key}');\n\
         define('DB_PASSWORD', '{db_password}');\ndefine('DB_HOST', 'localhost');\n\
         define('DB_CHARSET', 'utf8mb4');\n",
        uri = site.uri,
        key = site.key,
    );
    for (name, value) in SALT_NAMES.iter().zip(salts) {
        out += &format!("define('{name}', '{value}');\n");
    }
    out += &format!(
        "define('WP_HOME', '{url}');\ndefine('WP_SITEURL', '{url}');\n\
         // The one-time login plugin lives with the site, not in the shared wp-content.\n\
         define('WPMU_PLUGIN_DIR', '{mu}');\n\
         // A release is immutable: code changes come as a new release, not from wp-admin.\n\
         define('DISALLOW_FILE_MODS', true);\ndefine('AUTOMATIC_UPDATER_DISABLED', true);\n\
         $table_prefix = 'wp_';\n",
        url = site.url(),
        mu = site.mu_plugins_dir(),
    );
    out
}

/// The must-use plugin behind `aegir env login`: `?aegir-login=TOKEN` logs in as the first
/// administrator once. aegird stores only the token's SHA-256 and its expiry as an option;
/// the first request that deletes that row wins, so a link works once even when two
/// requests race.
pub const LOGIN_PLUGIN: &str = r#"<?php
/*
 * Plugin Name: Aegir one-time login
 * Description: Written by aegird. Accepts the single-use links `aegir env login` prints.
 */
add_action('init', function () {
    if (!isset($_GET['aegir-login']) || !is_string($_GET['aegir-login'])) {
        return;
    }
    global $wpdb;
    $name = 'aegir_login_' . hash('sha256', $_GET['aegir-login']);
    $expires = (int) $wpdb->get_var($wpdb->prepare(
        "SELECT option_value FROM {$wpdb->options} WHERE option_name = %s", $name));
    $taken = $wpdb->query($wpdb->prepare(
        "DELETE FROM {$wpdb->options} WHERE option_name = %s", $name));
    if ($taken !== 1 || $expires < time()) {
        wp_die('This login link has expired or has already been used.', 'Login link', array('response' => 403));
    }
    $admins = get_users(array('role' => 'administrator', 'number' => 1, 'orderby' => 'ID'));
    if (!$admins) {
        wp_die('This site has no administrator to log in as.', 'Login link', array('response' => 403));
    }
    wp_set_current_user($admins[0]->ID);
    wp_set_auth_cookie($admins[0]->ID, false);
    wp_safe_redirect(admin_url());
    exit;
});
"#;

/// Loads WordPress on the command line for the site nginx would serve: Debian's
/// wp-config.php reads HTTP_HOST and WORDPRESS_CONFIG, which the CLI does not set.
const BOOT: &str = r#"<?php
$_SERVER['HTTP_HOST'] = getenv('HTTP_HOST');
$_SERVER['SERVER_NAME'] = getenv('HTTP_HOST');
$_SERVER['WORDPRESS_CONFIG'] = getenv('WORDPRESS_CONFIG');
$_SERVER['REQUEST_URI'] = '/';
$root = $argv[1];
"#;

/// Install: `php -- ROOT TITLE EMAIL UPLOAD_PATH UPLOAD_URL`. A site already installed is
/// left as it is (the step runs again after a crash).
pub fn install_script() -> String {
    format!(
        "{BOOT}{}",
        r#"define('WP_INSTALLING', true);
require $root . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
if (!is_blog_installed()) {
    $result = wp_install($argv[2], 'admin', $argv[3], false, '', wp_generate_password(32, true, true));
    if (is_wp_error($result)) {
        fwrite(STDERR, $result->get_error_message() . "\n");
        exit(1);
    }
    echo "installed\n";
} else {
    echo "already installed\n";
}
update_option('upload_path', $argv[4]);
update_option('upload_url_path', $argv[5]);
"#
    )
}

/// Moves the uploads: `php -- ROOT FROM TO` points `upload_path` at TO if it is FROM (a site
/// taken over keeps its uploads in aegird's files directory); prints `moved` or `kept`.
pub fn repath_uploads_script() -> String {
    format!(
        "{BOOT}{}",
        r#"require $root . '/wp-load.php';
if (rtrim((string) get_option('upload_path'), '/') === rtrim($argv[2], '/')) {
    update_option('upload_path', $argv[3]);
    echo "moved\n";
} else {
    echo "kept\n";
}
"#
    )
}

/// One-time login: `php -- ROOT SHA256 EXPIRES` stores the token's hash; expired ones go.
pub fn login_script() -> String {
    format!(
        "{BOOT}{}",
        r#"require $root . '/wp-load.php';
global $wpdb;
$wpdb->query($wpdb->prepare(
    "DELETE FROM {$wpdb->options} WHERE option_name LIKE %s AND CAST(option_value AS UNSIGNED) < %d",
    'aegir\_login\_%', time()));
if (!add_option('aegir_login_' . $argv[2], $argv[3], '', 'no')) {
    fwrite(STDERR, "could not store the login token\n");
    exit(1);
}
echo "ok\n";
"#
    )
}

/// Cron: `php -- ROOT` runs the events that are due, as wp-cron.php would.
pub fn cron_script() -> String {
    format!(
        "{BOOT}{}",
        r#"define('DOING_CRON', true);
require $root . '/wp-load.php';
$crons = wp_get_ready_cron_jobs();
$ran = 0;
foreach ($crons as $timestamp => $cronhooks) {
    foreach ($cronhooks as $hook => $keys) {
        foreach ($keys as $k => $v) {
            if ($v['schedule']) {
                wp_reschedule_event($timestamp, $v['schedule'], $hook, $v['args']);
            }
            wp_unschedule_event($timestamp, $hook, $v['args']);
            do_action_ref_array($hook, $v['args']);
            $ran++;
        }
    }
}
echo "ran $ran events\n";
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AppKind;

    #[test]
    fn config_names_the_database_and_the_login_plugin() {
        let site = Site {
            uri: "site1.test".into(),
            aliases: vec![],
            redirect_aliases: false,
            key: "site1test_0000abcd".into(),
            app: AppKind::Wordpress,
            root: "/usr/share/wordpress".into(),
            docroot: "".into(),
            php: "8.2".into(),
        };
        let salts: Vec<String> = (0..8).map(|i| format!("salt{i}")).collect();
        let c = config(&site, "pw", &salts);
        assert!(c.starts_with("<?php\n"));
        assert!(c.contains("define('DB_NAME', 'site1test_0000abcd');"));
        assert!(c.contains("define('DB_PASSWORD', 'pw');"));
        assert!(c.contains("define('NONCE_SALT', 'salt7');"));
        assert!(c.contains("define('WPMU_PLUGIN_DIR', '/var/aegir/sites/site1.test/mu-plugins');"));
        assert!(c.contains("define('WP_HOME', 'http://site1.test');"));
    }
}
