//! nginx configuration aegird writes: the include, the per-site vhost (serving, or disabled),
//! and the script that swaps a vhost in only if `nginx -t` accepts the result.

use super::executor::HostExecutor;
use super::layout::{self, Site};
use super::shell;
use crate::engine::{StepContext, StepError};
use crate::model::AppKind;

/// What the vhost of a site does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    Active,
    /// Every request gets aegird's "site disabled" page with 503 and Retry-After.
    Disabled,
}

/// The file added to nginx's conf.d: the one change aegird makes to nginx's own config.
pub fn include() -> String {
    format!(
        "# Written by aegird: the sites it hosts. Remove this file to take them all offline.\n\
         include {}/*.conf;\n",
        layout::VHOST_DIR
    )
}

pub const DISABLED_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Site disabled</title>
<style>body{font-family:sans-serif;max-width:36em;margin:4em auto;color:#333}</style></head>
<body><h1>Site disabled</h1>
<p>This site is disabled by its administrator. Please try again later.</p></body>
</html>
"#;

/// The vhost of `site`. It names the site's key in its first line, so undo and delete touch
/// only a vhost this environment wrote.
pub fn vhost(site: &Site, serving: Serving) -> String {
    let mut names = vec![site.uri.clone()];
    let mut out = format!(
        "# Written by aegird for {} (aegir-env {}); `aegir env verify` writes it again.\n",
        site.uri, site.key
    );
    if site.redirect_aliases && !site.aliases.is_empty() {
        out += &format!(
            "server {{\n    listen 80;\n    listen [::]:80;\n    server_name {};\n{}    \
             location / {{\n        return 301 http://{}$request_uri;\n    }}\n}}\n",
            site.aliases.join(" "),
            acme(),
            site.uri
        );
    } else {
        names.extend(site.aliases.iter().cloned());
    }
    out += &format!(
        "server {{\n    listen 80;\n    listen [::]:80;\n    server_name {};\n    root {};\n    \
         index index.php index.html;\n    access_log /var/log/nginx/aegir-{}.access.log;\n{}",
        names.join(" "),
        site.docroot_path(),
        site.uri,
        acme()
    );
    // Dot files (.git, .htaccess, the key marker) and private paths are never served.
    out += "    location ~ /\\.(?!well-known/) {\n        deny all;\n    }\n";
    match serving {
        Serving::Disabled => out += &disabled(),
        Serving::Active => out += &app_locations(site),
    }
    out += "}\n";
    out
}

fn acme() -> String {
    format!(
        "    location ^~ /.well-known/acme-challenge/ {{\n        alias {}/;\n        \
         default_type text/plain;\n    }}\n",
        layout::ACME_DIR
    )
}

fn disabled() -> String {
    format!(
        "    error_page 503 /aegir-disabled.html;\n    location = /aegir-disabled.html {{\n        \
         internal;\n        root {};\n        try_files /index.html =503;\n        \
         add_header Retry-After 3600 always;\n        add_header Cache-Control no-store always;\n    \
         }}\n    location / {{\n        return 503;\n    }}\n",
        layout::DISABLED_DIR
    )
}

fn php_pass(site: &Site, extra: &str) -> String {
    format!(
        "        include fastcgi_params;\n        \
         fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n{extra}        \
         fastcgi_pass unix:{};\n",
        layout::pool_socket(&site.php)
    )
}

/// Locations of a serving site: the application's front controller through php-fpm, files
/// served but never executed.
fn app_locations(site: &Site) -> String {
    match site.app {
        AppKind::Wordpress => {
            let config = format!(
                "        fastcgi_param WORDPRESS_CONFIG {};\n",
                site.wordpress_config_name()
            );
            format!(
                "    location ^~ /wp-content/uploads/ {{\n        alias {files}/;\n        \
                 location ~ \\.php$ {{\n            deny all;\n        }}\n    }}\n    \
                 location ^~ /wp-content/ {{\n        alias {content}/;\n        \
                 location ~ \\.php$ {{\n            deny all;\n        }}\n    }}\n    \
                 location / {{\n        try_files $uri $uri/ /index.php?$args;\n    }}\n    \
                 location ~ \\.php$ {{\n        try_files $uri =404;\n{php}    }}\n",
                files = site.files_dir(),
                content = WORDPRESS_CONTENT_DIR,
                php = php_pass(site, &config),
            )
        }
        AppKind::Drupal | AppKind::Drupal7 => format!(
            "    location ~ ^/sites/[^/]+/files/.*\\.php$ {{\n        deny all;\n    }}\n    \
             location ~ ^/sites/[^/]+/private/ {{\n        deny all;\n    }}\n    \
             location ~* \\.(engine|inc|install|make|module|profile|po|sh|sql|theme|twig|tpl\\.php|xtmpl|yml|info)$ {{\n        \
             deny all;\n    }}\n    \
             location ~ ^/sites/[^/]+/files/styles/ {{\n        try_files $uri /index.php?$query_string;\n    }}\n    \
             location / {{\n        try_files $uri /index.php?$query_string;\n    }}\n    \
             location ~ ^/(index|install|update|cron|authorize)\\.php(/|$) {{\n        \
             fastcgi_split_path_info ^(.+\\.php)(/.*)$;\n        try_files $fastcgi_script_name =404;\n\
             {php}    }}\n    location ~ \\.php(/|$) {{\n        deny all;\n    }}\n",
            php = php_pass(site, ""),
        ),
        AppKind::Php => format!(
            "    location / {{\n        try_files $uri $uri/ /index.php?$query_string;\n    }}\n    \
             location ~ \\.php$ {{\n        try_files $uri =404;\n{php}    }}\n",
            php = php_pass(site, ""),
        ),
    }
}

/// Debian's WordPress keeps themes and plugins here (WP_CONTENT_DIR in its wp-config.php).
pub const WORDPRESS_CONTENT_DIR: &str = "/var/lib/wordpress/wp-content";

/// Shell script that puts `$2` (a file just written next to it) in place as `$1`, or removes
/// `$1` when `$2` is empty, then tests nginx; if the test fails, the previous file is put
/// back and the script fails with nginx's complaint. `$3` is the lock file. [`install`] runs
/// it (as [`swap_and_reload`]): aegird's nginx files are only ever changed that way.
const SWAP_AND_RELOAD: &str = r#"set -e
exec 9>"$3"
flock 9
backup="$1.aegir-previous"
rm -f "$backup"
if [ -e "$1" ]; then cp -p "$1" "$backup"; fi
if [ -n "$2" ]; then mv -f "$2" "$1"; else rm -f "$1"; fi
if ! out=$(nginx -t 2>&1); then
  if [ -e "$backup" ]; then mv -f "$backup" "$1"; else rm -f "$1"; fi
  echo "nginx -t refused the new configuration, the previous one is back: $out" >&2
  exit 1
fi
rm -f "$backup"
"#;

/// Reloads nginx and waits until the workers of the old configuration are gone: nginx
/// applies a reload asynchronously, and an operation must end with its change serving.
pub const RELOAD: &str = r#"master=$(cat /run/nginx.pid 2>/dev/null || true)
old=""
if [ -n "$master" ]; then old=$(pgrep -P "$master" | tr '\n' ' '); fi
if [ -e /run/systemd/system ] && systemctl is-active --quiet nginx; then systemctl reload nginx; else nginx -s reload; fi
i=0
while [ $i -lt 100 ]; do
  alive=""
  for p in $old; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
  [ -n "$alive" ] || break
  i=$((i + 1)); sleep 0.1
done
"#;

/// [`SWAP_AND_RELOAD`] followed by [`RELOAD`], as one script.
fn swap_and_reload() -> String {
    format!("{SWAP_AND_RELOAD}{RELOAD}")
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The file already held exactly this.
    Unchanged,
    /// There was no file.
    New,
    /// There was a file with something else in it (drift, on verify).
    Replaced,
}

/// Put `text` at `path`, a file of nginx's configuration, if it is not already there: written
/// next to it, swapped in only if `nginx -t` accepts the result, then nginx reloaded.
pub async fn install(
    cx: &StepContext,
    exec: &dyn HostExecutor,
    path: &str,
    text: &str,
) -> Result<Installed, StepError> {
    let current = shell::script(
        cx,
        exec,
        &format!("read {path}"),
        r#"cat "$1" 2>/dev/null || true"#,
        &[path],
    )
    .await?;
    if current == text {
        return Ok(Installed::Unchanged);
    }
    let new = format!("{path}.aegir-new");
    shell::write(cx, exec, &new, text, 0o644).await?;
    shell::script(
        cx,
        exec,
        &format!("install {path} and reload nginx"),
        &swap_and_reload(),
        &[path, &new, layout::NGINX_LOCK],
    )
    .await?;
    Ok(if current.is_empty() {
        Installed::New
    } else {
        Installed::Replaced
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(app: AppKind) -> Site {
        Site {
            uri: "site1.test".into(),
            aliases: vec!["www.site1.test".into()],
            redirect_aliases: true,
            key: "site1test_0000abcd".into(),
            app,
            root: "/usr/share/wordpress".into(),
            docroot: "".into(),
            php: "8.2".into(),
        }
    }

    #[test]
    fn wordpress_vhost_serves_php_but_not_from_uploads() {
        let v = vhost(&site(AppKind::Wordpress), Serving::Active);
        assert!(v.contains("aegir-env site1test_0000abcd"));
        assert!(v.contains("server_name www.site1.test;"));
        assert!(v.contains("return 301 http://site1.test$request_uri;"));
        assert!(v.contains("fastcgi_param WORDPRESS_CONFIG aegir-site1test-0000abcd;"));
        assert!(v.contains("fastcgi_pass unix:/run/php/aegir-php8.2-fpm.sock;"));
        let uploads = v.find("location ^~ /wp-content/uploads/").unwrap();
        assert!(v[uploads..].find("deny all").unwrap() < v[uploads..].find("location /").unwrap());
        assert!(v.contains("/.well-known/acme-challenge/"));
    }

    #[test]
    fn aliases_are_served_when_not_redirected() {
        let mut s = site(AppKind::Php);
        s.redirect_aliases = false;
        let v = vhost(&s, Serving::Active);
        assert!(v.contains("server_name site1.test www.site1.test;"));
        assert!(!v.contains("return 301"));
    }

    #[test]
    fn a_disabled_vhost_answers_503_and_runs_no_php() {
        let v = vhost(&site(AppKind::Drupal), Serving::Disabled);
        assert!(v.contains("return 503;"));
        assert!(v.contains("Retry-After"));
        assert!(!v.contains("fastcgi_pass"));
        assert!(v.contains("/.well-known/acme-challenge/"));
    }
}
