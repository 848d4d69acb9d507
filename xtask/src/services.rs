//! Making sure the host services that `server verify` detects, and the real application
//! release verify reads, are installed (not started).
//!
//! The tests only look for the binaries and files, so installing is enough; starting them
//! would just hold ports and memory.

use std::path::Path;

use anyhow::Result;

use crate::apt::Apt;
use crate::cmd;

/// One service: how to tell it is installed, and the Debian package that provides it.
struct Service {
    name: &'static str,
    package: &'static str,
    installed: fn() -> bool,
}

const SERVICES: [Service; 5] = [
    Service {
        name: "nginx",
        package: "nginx",
        installed: || Path::new("/usr/sbin/nginx").exists(),
    },
    Service {
        name: "php-fpm",
        package: "php-fpm",
        // Debian names the binary after the PHP version (php-fpm8.2).
        installed: || {
            std::fs::read_dir("/usr/sbin").is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|entry| entry.file_name().to_string_lossy().starts_with("php-fpm"))
            })
        },
    },
    Service {
        name: "MariaDB",
        package: "mariadb-server",
        installed: || {
            ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
                .iter()
                .any(|path| Path::new(path).exists())
        },
    },
    Service {
        name: "WordPress",
        // Naming php keeps apt from pulling in apache2 for WordPress's PHP dependency.
        package: "wordpress php",
        installed: || Path::new("/usr/share/wordpress/wp-includes/version.php").exists(),
    },
    Service {
        // The SSH tests start their own sshd inside a network namespace.
        name: "sshd",
        package: "openssh-server",
        installed: || Path::new("/usr/sbin/sshd").exists(),
    },
];

/// Installs whichever of nginx, php-fpm, MariaDB, WordPress and sshd is missing; apt is left alone if none is.
pub fn ensure(apt: &mut Apt) -> Result<()> {
    cmd::header("Ensuring nginx, php-fpm, MariaDB, WordPress and sshd are installed");
    let missing: Vec<&Service> = SERVICES.iter().filter(|s| !(s.installed)()).collect();
    if missing.is_empty() {
        println!("All installed");
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|s| s.name).collect();
    let packages: Vec<&str> = missing
        .iter()
        .flat_map(|s| s.package.split_whitespace())
        .collect();
    apt.install(&names.join(", "), &packages)
}
