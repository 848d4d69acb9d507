//! Making sure a PostgreSQL that the tests can log in to answers on 127.0.0.1:5432.
//!
//! Development machines run one with trust logins; a fresh Debian machine has none, and once
//! installed it asks for a password over TCP. Either way we end with a URL that works.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::apt::Apt;
use crate::cmd;

/// The variable the tests and benchmarks read their PostgreSQL URL from.
pub const URL_VAR: &str = "AEGIR_TEST_POSTGRES_URL";

/// What the tests use when [`URL_VAR`] is unset: a trust login, as on the development machines.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The password we give the postgres role where trust logins over TCP are off. It guards a
/// throwaway test database on the loopback interface, so it need not be secret.
const TEST_PASSWORD: &str = "aegir-test";
const PASSWORD_URL: &str = "postgres://postgres:aegir-test@127.0.0.1:5432/postgres";

const ADDRESS: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);

/// Installs and starts PostgreSQL if needed, and returns the URL the tests must use.
pub fn ensure(apt: &mut Apt) -> Result<String> {
    cmd::header("Ensuring PostgreSQL answers on 127.0.0.1:5432");
    if is_up() {
        println!("PostgreSQL is up");
    } else {
        start(apt)?;
    }
    login_url(apt)
}

fn start(apt: &mut Apt) -> Result<()> {
    if cmd::find_program("pg_ctlcluster").is_none() {
        apt.install("PostgreSQL", &["postgresql"])?;
    }
    // The package's maintainer script may have started it already.
    if is_up() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "PostgreSQL does not answer on 127.0.0.1:5432 and starting it needs root; \
             start it yourself or run as root"
        );
    }
    let version = cluster_version()?;
    // There is no systemd as PID 1 here: without the flag, pg_ctlcluster hands over to systemctl.
    cmd::run(Command::new("pg_ctlcluster").args([
        "--skip-systemctl-redirect",
        &version,
        "main",
        "start",
    ]))?;
    wait_up()
}

/// The version of the `main` cluster to start, creating the cluster if the package made none.
fn cluster_version() -> Result<String> {
    if let Some(version) = versions_in(Path::new("/etc/postgresql"))
        .into_iter()
        .rfind(|version| {
            Path::new("/etc/postgresql")
                .join(version)
                .join("main")
                .is_dir()
        })
    {
        return Ok(version);
    }
    let Some(version) = versions_in(Path::new("/usr/lib/postgresql")).pop() else {
        bail!("no PostgreSQL server is installed (nothing under /usr/lib/postgresql)");
    };
    cmd::run(Command::new("pg_createcluster").args([&version, "main"]))?;
    Ok(version)
}

/// Names of version directories (`15`, `9.6`) under `dir`, oldest first.
fn versions_in(dir: &Path) -> Vec<String> {
    let mut versions: Vec<(Vec<u32>, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| Some((version_key(&name)?, name)))
        .collect();
    versions.sort();
    versions.into_iter().map(|(_, name)| name).collect()
}

fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_up() -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(ADDRESS), Duration::from_secs(1)).is_ok()
}

fn wait_up() -> Result<()> {
    cmd::wait_until("PostgreSQL on 127.0.0.1:5432", is_up)?;
    println!("PostgreSQL is up");
    Ok(())
}

/// The URL the tests can log in with: the user's own if set, else trust, else a password we set.
fn login_url(apt: &mut Apt) -> Result<String> {
    if cmd::find_program("psql").is_none() {
        apt.install("psql", &["postgresql-client"])?;
    }
    if let Some(url) = std::env::var(URL_VAR).ok().filter(|url| !url.is_empty()) {
        check_login(&url).with_context(|| format!("cannot log in with {URL_VAR}"))?;
        return Ok(url);
    }
    if check_login(DEFAULT_URL).is_ok() {
        return Ok(DEFAULT_URL.to_owned());
    }
    println!("No trust login as postgres over TCP (Debian's default); using a password");
    // An earlier run may have set it already; then there is nothing to change.
    if check_login(PASSWORD_URL).is_ok() {
        return Ok(PASSWORD_URL.to_owned());
    }
    if !cmd::is_root() {
        bail!(
            "cannot log in to PostgreSQL as postgres over TCP, and setting a password needs \
             root; set {URL_VAR} to a URL that works"
        );
    }
    cmd::run(
        Command::new("runuser")
            .args(["-u", "postgres", "--", "psql", "-X", "-q", "-c"])
            .arg(format!("ALTER USER postgres PASSWORD '{TEST_PASSWORD}'"))
            // The postgres user cannot enter root's directory, and psql would say so.
            .current_dir("/"),
    )?;
    check_login(PASSWORD_URL).context("cannot log in with the password just set")?;
    Ok(PASSWORD_URL.to_owned())
}

/// Runs `select 1` through `url`; the error carries what psql said.
fn check_login(url: &str) -> Result<()> {
    let mut psql = Command::new("psql");
    // -w: fail instead of prompting for a password; -X: ignore the user's ~/.psqlrc.
    psql.env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-w", "-q", "-d", url, "-c", "select 1"]);
    println!("$ {}", cmd::display(&psql));
    let output = cmd::capture(&mut psql)?;
    if !output.status.success() {
        bail!(
            "psql could not log in: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    println!("PostgreSQL login works");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_number_not_text() {
        let dir = std::env::temp_dir().join(format!("xtask-versions-{}", std::process::id()));
        for name in ["9.6", "15", "13", "README"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        let versions = versions_in(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(versions, ["9.6", "13", "15"]);
    }

    #[test]
    fn password_url_carries_the_password() {
        assert!(PASSWORD_URL.contains(&format!(":{TEST_PASSWORD}@")));
    }
}
