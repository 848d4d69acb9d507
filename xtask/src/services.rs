//! Making sure the host services the end-to-end tests install real WordPress sites through
//! (nginx, php-fpm, MariaDB) are installed and running, and what else the tests use installed
//! (Chromium and playwright-core for the web UI's browser test among them).
//!
//! Only those three are started: the SSH tests start their own sshd, and the rest are programs.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::apt::Apt;
use crate::cmd;

/// One thing the tests need: how to tell it is installed, and the Debian packages that provide it.
struct Requirement {
    name: &'static str,
    package: &'static str,
    installed: fn() -> bool,
}

const REQUIREMENTS: [Requirement; 12] = [
    Requirement {
        name: "nginx",
        package: "nginx",
        installed: || Path::new("/usr/sbin/nginx").exists(),
    },
    Requirement {
        name: "php-fpm",
        package: "php-fpm",
        installed: || !php_fpm_versions().is_empty(),
    },
    Requirement {
        // WordPress refuses to run without mysqli.
        name: "PHP's mysqli",
        package: "php-mysql",
        // What counts is that php-fpm loads it: removing php-mysql disables it there but
        // leaves its file in mods-available behind.
        installed: || {
            let versions = php_fpm_versions();
            !versions.is_empty() && versions.iter().all(|version| php_fpm_has_mysqli(version))
        },
    },
    Requirement {
        name: "PHP CLI",
        package: "php-cli",
        // An alternatives symlink, which dangles (so does not exist) once no CLI is left.
        installed: || Path::new("/usr/bin/php").exists(),
    },
    Requirement {
        name: "MariaDB",
        package: "mariadb-server",
        installed: || {
            ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
                .iter()
                .any(|path| Path::new(path).exists())
        },
    },
    Requirement {
        name: "WordPress",
        // Naming php keeps apt from pulling in apache2 for WordPress's PHP dependency.
        package: "wordpress php",
        installed: || Path::new("/usr/share/wordpress/wp-includes/version.php").exists(),
    },
    Requirement {
        // The theme the tests' sites use; the wordpress package ships none.
        name: "WordPress theme Twenty Twenty-Three",
        package: "wordpress-theme-twentytwentythree",
        installed: || {
            Path::new("/usr/share/wordpress/wp-content/themes/twentytwentythree/style.css").exists()
        },
    },
    Requirement {
        // The SSH tests start their own sshd inside a network namespace.
        name: "sshd",
        package: "openssh-server",
        installed: || Path::new("/usr/sbin/sshd").exists(),
    },
    Requirement {
        name: "curl",
        package: "curl",
        installed: || Path::new("/usr/bin/curl").exists(),
    },
    Requirement {
        name: "flock",
        package: "util-linux",
        installed: || Path::new("/usr/bin/flock").exists(),
    },
    Requirement {
        // The web UI's browser test drives it through playwright-core.
        name: "Chromium",
        package: "chromium",
        installed: || Path::new("/usr/bin/chromium").exists(),
    },
    Requirement {
        name: "Node.js and npm",
        package: "nodejs npm",
        installed: || Path::new("/usr/bin/node").exists() && Path::new("/usr/bin/npm").exists(),
    },
];

/// The npm packages of the browser test (playwright-core, pinned in tests/browser's
/// package-lock.json), installed exactly as locked. playwright-core needs Node.js 20 or later.
pub fn ensure_browser_driver(root: &Path) -> Result<()> {
    cmd::header("Installing the browser test's npm packages (npm ci)");
    let version = Command::new("node").arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        bail!(
            "Node.js {} is too old for playwright-core: the browser test needs Node.js 20 or \
             later (Debian 13's nodejs, or NodeSource's packages on Debian 12)",
            version.trim()
        );
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(root.join("tests/browser"));
    cmd::run(&mut npm)
}

/// Installs whichever of the requirements is missing; apt is left alone if none is.
pub fn ensure(apt: &mut Apt) -> Result<()> {
    cmd::header(
        "Ensuring nginx, PHP, MariaDB, WordPress, sshd, curl, flock, Chromium and Node.js are \
         installed",
    );
    let missing: Vec<&Requirement> = REQUIREMENTS.iter().filter(|r| !(r.installed)()).collect();
    if missing.is_empty() {
        println!("All installed");
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|r| r.name).collect();
    let packages: Vec<&str> = missing
        .iter()
        .flat_map(|r| r.package.split_whitespace())
        .collect();
    apt.install(&names.join(", "), &packages)
}

/// Starts MariaDB, every installed php-fpm and nginx, each unless it already runs.
pub fn start() -> Result<()> {
    cmd::header("Starting nginx, php-fpm and MariaDB");
    start_mariadb()?;
    for version in php_fpm_versions() {
        start_php_fpm(&version)?;
    }
    // Last, as it hands PHP requests on to php-fpm.
    start_nginx()
}

fn start_mariadb() -> Result<()> {
    let daemon = Daemon {
        name: "MariaDB".to_owned(),
        unit: "mariadb".to_owned(),
        direct: vec![
            // Where the socket and pid file go; /run may be a fresh tmpfs. Debian's init
            // script creates it the same way.
            command(
                "install",
                &[
                    "-m",
                    "755",
                    "-o",
                    "mysql",
                    "-g",
                    "root",
                    "-d",
                    "/run/mysqld",
                ],
            ),
            // mariadbd stays in the foreground; start-stop-daemon detaches it for us.
            command(
                "start-stop-daemon",
                &[
                    "--start",
                    "--oknodo",
                    "--background",
                    "--exec",
                    "/usr/sbin/mariadbd",
                ],
            ),
        ],
    };
    // Whether it runs is whether its socket takes a connection: a query needs a login, and
    // only root has one.
    let running = || UnixStream::connect("/run/mysqld/mysqld.sock").is_ok();
    let answers =
        || cmd::succeeds(Command::new("mariadb").args(["--connect-timeout=5", "-e", "select 1"]));
    daemon.start(running, answers)
}

fn start_php_fpm(version: &str) -> Result<()> {
    let program = format!("php-fpm{version}");
    let daemon = Daemon {
        name: program.clone(),
        unit: format!("php{version}-fpm"),
        direct: vec![
            // Debian's php-fpm.conf puts the pid file and sockets there; /run may be fresh.
            command("install", &["-d", "/run/php"]),
            command(&program, &["--daemonize"]),
        ],
    };
    let pid_file = format!("/run/php/php{version}-fpm.pid");
    let running = || pid_file_names(Path::new(&pid_file), &program);
    daemon.start(running, running)
}

fn start_nginx() -> Result<()> {
    let daemon = Daemon {
        name: "nginx".to_owned(),
        unit: "nginx".to_owned(),
        // nginx detaches itself.
        direct: vec![command("nginx", &[])],
    };
    let running = || pid_file_names(Path::new("/run/nginx.pid"), "nginx");
    daemon.start(running, running)
}

/// A service to start: through its systemd unit where systemd runs, else by `direct`.
struct Daemon {
    name: String,
    unit: String,
    direct: Vec<Command>,
}

impl Daemon {
    /// Starts it unless `running` says it runs, then waits until `answers`; prints which.
    fn start(self, running: impl Fn() -> bool, answers: impl Fn() -> bool) -> Result<()> {
        if running() {
            println!("{}: already running", self.name);
            return Ok(());
        }
        let mut commands = if systemd_runs() {
            // systemd must own the service, or it cannot stop or restart it.
            vec![command("systemctl", &["start", &self.unit])]
        } else {
            self.direct
        };
        let name = self.name;
        if !cmd::is_root() {
            let shown: Vec<String> = commands.iter().map(cmd::display).collect();
            bail!(
                "{name} is not running and starting it needs root; run `{}` as root, \
                 or run this as root",
                shown.join(" && ")
            );
        }
        for command in &mut commands {
            cmd::run(command)?;
        }
        cmd::wait_until(&name, answers)?;
        println!("{name}: started");
        Ok(())
    }
}

/// Whether systemd is PID 1 (what sd_booted(3) checks); then it, not us, starts services.
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").exists()
}

/// `program` with `args`, found also in the sbin directories a non-login root shell may lack.
fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(cmd::find_program(program).unwrap_or_else(|| program.into()));
    command.args(args);
    command
}

/// Whether the pid file at `path` names a live process called `program`. The name matters
/// in containers, where the pid in a file left from before a restart soon belongs to another.
fn pid_file_names(path: &Path, program: &str) -> bool {
    let Some(pid) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return false;
    };
    // The kernel cuts names to 15 bytes.
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| {
        let comm = comm.trim_end();
        !comm.is_empty() && program.starts_with(comm)
    })
}

/// The PHP versions (`8.2`) of the installed php-fpm binaries, which Debian names after them.
fn php_fpm_versions() -> Vec<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/usr/sbin")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| php_fpm_version(&entry.file_name().to_string_lossy()))
        .collect();
    versions.sort();
    versions
}

fn php_fpm_version(file_name: &str) -> Option<String> {
    let version = file_name.strip_prefix("php-fpm")?;
    let numeric = !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.');
    numeric.then(|| version.to_owned())
}

/// Whether php-fpm `version` loads mysqli: its conf.d links to the ini file (`20-mysqli.ini`).
fn php_fpm_has_mysqli(version: &str) -> bool {
    std::fs::read_dir(format!("/etc/php/{version}/fpm/conf.d"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            entry.file_name().to_string_lossy().ends_with("-mysqli.ini")
                // Dangling once php-mysql is purged.
                && entry.path().exists()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_fpm_versions_come_from_binary_names() {
        assert_eq!(php_fpm_version("php-fpm8.2").as_deref(), Some("8.2"));
        assert_eq!(php_fpm_version("php-fpm"), None);
        assert_eq!(php_fpm_version("php-fpm-socket-helper"), None);
        assert_eq!(php_fpm_version("nginx"), None);
    }

    #[test]
    fn pid_files_must_name_a_live_process_of_that_program() {
        let dir = std::env::temp_dir().join(format!("xtask-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours = dir.join("ours.pid");
        std::fs::write(&ours, format!("{}\n", std::process::id())).unwrap();
        let own_name = std::fs::read_to_string("/proc/self/comm").unwrap();
        let garbage = dir.join("garbage.pid");
        std::fs::write(&garbage, "not a pid").unwrap();

        assert!(pid_file_names(&ours, own_name.trim_end()));
        assert!(!pid_file_names(&ours, "nginx"));
        assert!(!pid_file_names(&garbage, "nginx"));
        assert!(!pid_file_names(&dir.join("missing.pid"), "nginx"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
