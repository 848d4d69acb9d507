//! `cargo xtask test-install`: the packages installed for real. The .deb goes into a fresh
//! debootstrap Debian root with apt (dependencies resolved from Debian's archive): user and
//! files checked, aegird started the way its unit starts it, an upgrade from an earlier
//! version with data in the store, then remove and purge. The .rpm is checked with rpm's
//! queries and installed into an `rpm --root` scratch root.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, ensure, Context, Result};

use crate::apt::Apt;
use crate::{cmd, dist, tools};

/// The earlier version the upgrade starts from: the last commit before the backups
/// migration (0005), so the upgrade has a migration to run on a store with data.
const EARLIER_COMMIT: &str = "2d28495";
const EARLIER_VERSION: &str = "0.0.1";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

pub struct Options {
    pub out: Option<PathBuf>,
    pub install: bool,
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let target = dist::target_dir(root);
    let out = opts.out.clone().unwrap_or_else(|| target.join("dist/out"));
    let mut apt = Apt::new(opts.install);
    for (program, package) in [
        ("debootstrap", "debootstrap"),
        ("rpm", "rpm"),
        ("curl", "curl"),
    ] {
        tools::ensure_command(&mut apt, program, package)?;
    }
    let deb = dist::artifact(&out, "_amd64.deb")?;
    let rpm = dist::artifact(&out, ".x86_64.rpm")?;
    let earlier = earlier_deb(root, &target, opts.install)?;
    let base = base_root(&target)?;
    deb_lifecycle(&target, &base, &earlier, &deb)?;
    rpm_checks(&target, &rpm)?;
    println!(
        "test-install: the .deb installs, runs, upgrades, removes and purges; the .rpm installs"
    );
    Ok(())
}

/// The earlier version's binaries, built from its commit, packaged with today's packaging and
/// its own configuration file (today's has keys it would refuse).
fn earlier_deb(root: &Path, target: &Path, install: bool) -> Result<PathBuf> {
    cmd::header(&format!(
        "Building the earlier version ({EARLIER_VERSION}, commit {EARLIER_COMMIT})"
    ));
    let deb = target.join(format!("dist/earlier/aegir_{EARLIER_VERSION}_amd64.deb"));
    let tree = target.join("dist/earlier/tree");
    let build = target.join("dist/earlier/build");
    if !tree.join("Cargo.toml").exists() {
        if tree.exists() {
            fs::remove_dir_all(&tree)?;
        }
        fs::create_dir_all(&tree)?;
        // `git archive`: the commit's files only, no worktree bookkeeping in the repository.
        let archive = cmd::capture(
            Command::new("git")
                .args(["archive", "--format=tar", EARLIER_COMMIT])
                .current_dir(root),
        )?;
        ensure!(
            archive.status.success(),
            "git archive {EARLIER_COMMIT} failed (a shallow clone? fetch the history): {}",
            String::from_utf8_lossy(&archive.stderr)
        );
        tar::Archive::new(&archive.stdout[..]).unpack(&tree)?;
    }
    cmd::run(
        cmd::cargo()
            .args(["build", "--release", "--locked", "-p", "aegird", "--bins"])
            .arg("--target-dir")
            .arg(&build)
            .current_dir(&tree)
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols"),
    )?;
    let gen = build.join("release/dist-assets");
    crate::assets::generate(root, &gen, EARLIER_VERSION, 0)?;
    fs::write(
        gen.join("aegird.toml"),
        cmd::output(
            Command::new("git")
                .args(["show", &format!("{EARLIER_COMMIT}:packaging/aegird.toml")])
                .current_dir(root),
        )?,
    )?;
    let cargo_deb = tools::cargo_deb(install)?;
    let epoch = dist::source_date_epoch(root)?;
    dist::deb_package(root, &cargo_deb, &build, EARLIER_VERSION, epoch, &deb)?;
    Ok(deb)
}

/// A minbase Debian root, made once and kept as a tarball (debootstrap downloads for a while).
fn base_root(target: &Path) -> Result<PathBuf> {
    let tarball = target.join(format!("dist/debootstrap-{SUITE}.tar"));
    if !tarball.exists() {
        cmd::header(&format!("debootstrap --variant=minbase {SUITE}"));
        let dir = target.join("dist/debootstrap-tmp");
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        cmd::run(
            Command::new("debootstrap")
                .args(["--variant=minbase", SUITE])
                .arg(&dir)
                .arg(MIRROR),
        )?;
        let partial = tarball.with_extension("tar.partial");
        cmd::run(
            Command::new("tar")
                .arg("-cf")
                .arg(&partial)
                .arg("-C")
                .arg(&dir)
                .arg("."),
        )?;
        fs::rename(&partial, &tarball)?;
        fs::remove_dir_all(&dir)?;
    }
    Ok(tarball)
}

/// A fresh root from the tarball with /proc and /dev mounted; unmounted and removed on drop.
struct Chroot {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Chroot {
    fn new(target: &Path, base: &Path) -> Result<Chroot> {
        let dir = target.join("dist/testroot");
        if dir.exists() {
            cleanup_mounts(&dir);
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        cmd::run(Command::new("tar").arg("-xf").arg(base).arg("-C").arg(&dir))?;
        let mut root = Chroot {
            dir,
            mounted: Vec::new(),
        };
        for (what, args) in [
            ("proc", vec!["-t", "proc", "proc"]),
            ("dev", vec!["--bind", "/dev"]),
        ] {
            let at = root.dir.join(what);
            cmd::run(Command::new("mount").args(&args).arg(&at))?;
            root.mounted.push(at);
        }
        fs::copy("/etc/resolv.conf", root.dir.join("etc/resolv.conf"))?;
        Ok(root)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.dir)
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LANG", "C.UTF-8");
        c
    }

    fn sh(&self, script: &str) -> Result<String> {
        cmd::output(self.cmd("/bin/sh").args(["-ec", script]))
    }

    fn apt(&self, args: &[&str]) -> Result<()> {
        cmd::run(
            self.cmd("apt-get")
                .args(["-y", "-o", "DPkg::Lock::Timeout=600"])
                .args(args),
        )
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p.trim_start_matches('/'))
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for at in self.mounted.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(at).status();
        }
    }
}

fn cleanup_mounts(dir: &Path) {
    for m in ["proc", "dev"] {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir.join(m))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn deb_lifecycle(target: &Path, base: &Path, earlier: &Path, deb: &Path) -> Result<()> {
    let root = Chroot::new(target, base)?;
    cmd::header("Installing the earlier .deb with apt in a fresh Debian root");
    root.apt(&["update"])?;
    root.apt(&["install", "--no-install-recommends", "curl"])?;
    fs::copy(earlier, root.path("/tmp/earlier.deb"))?;
    fs::copy(deb, root.path("/tmp/aegir.deb"))?;
    root.apt(&["install", "--no-install-recommends", "/tmp/earlier.deb"])?;
    check_installed(&root, EARLIER_VERSION)?;

    cmd::header("Starting the earlier aegird as its unit does, putting data in the store");
    let token = root.sh(
        "runuser -u aegir -- /usr/bin/aegird --config /etc/aegir/aegird.toml \
         token create --name test-install",
    )?;
    let token = token
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .context("aegird token create printed no token")?
        .to_string();
    {
        let daemon = Daemon::start(&root)?;
        daemon.api_post(
            &token,
            "/api/v1/servers",
            r#"{"name":"kept","transport":"local"}"#,
        )?;
        let listed = daemon.api_get(&token, "/api/v1/servers")?;
        ensure!(
            listed.contains("\"kept\""),
            "the server was not recorded: {listed}"
        );
    }

    cmd::header("Upgrading to the new .deb");
    root.apt(&["install", "--no-install-recommends", "/tmp/aegir.deb"])?;
    let version = deb_version(deb)?;
    check_installed(&root, &version)?;
    {
        let daemon = Daemon::start(&root)?;
        let health = daemon.get("/healthz")?;
        ensure!(
            health.contains(&version),
            "/healthz of the new version: {health}"
        );
        let listed = daemon.api_get(&token, "/api/v1/servers")?;
        ensure!(
            listed.contains("\"kept\""),
            "the store's data did not survive the upgrade: {listed}"
        );
    }
    let copies = root.sh("ls /var/lib/aegir")?;
    ensure!(
        copies.contains("aegir.db.before-0005"),
        "the upgrade migrated the store without setting a copy aside: {copies}"
    );
    println!("upgrade: data kept, store migrated (copy aside: aegir.db.before-0005)");

    cmd::header("apt remove keeps /var/lib/aegir; apt purge removes it");
    root.apt(&["remove", "aegir"])?;
    ensure!(
        !root.path("/usr/bin/aegird").exists(),
        "remove left /usr/bin/aegird"
    );
    ensure!(
        root.path("/var/lib/aegir/aegir.db").exists(),
        "remove deleted the store"
    );
    ensure!(
        root.path("/etc/aegir/aegird.toml").exists(),
        "remove deleted the conffile"
    );
    root.apt(&["purge", "aegir"])?;
    ensure!(
        !root.path("/var/lib/aegir").exists(),
        "purge left /var/lib/aegir"
    );
    ensure!(!root.path("/etc/aegir").exists(), "purge left /etc/aegir");
    println!("remove kept the state, purge removed it");
    Ok(())
}

fn deb_version(deb: &Path) -> Result<String> {
    Ok(cmd::output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Version"),
    )?
    .trim()
    .to_string())
}

/// The user, its groups, the files and the state directory, as the package makes them.
fn check_installed(root: &Chroot, version: &str) -> Result<()> {
    let status = root.sh("dpkg-query -W -f '${Version} ${Status}' aegir")?;
    ensure!(
        status == format!("{version} install ok installed"),
        "dpkg says {status:?}"
    );
    let user = root.sh("getent passwd aegir")?;
    ensure!(
        user.contains(":/var/lib/aegir:") && user.trim_end().ends_with("nologin"),
        "aegir user: {user}"
    );
    let groups = root.sh("id -nG aegir")?;
    ensure!(
        groups.split_whitespace().any(|g| g == "www-data"),
        "aegir is not in www-data: {groups}"
    );
    for file in [
        "/usr/bin/aegird",
        "/usr/bin/aegir",
        "/etc/aegir/aegird.toml",
        "/usr/lib/systemd/system/aegird.service",
        "/usr/lib/sysusers.d/aegir.conf",
        "/usr/lib/tmpfiles.d/aegir.conf",
        "/usr/share/man/man8/aegird.8.gz",
        "/usr/share/man/man1/aegir.1.gz",
        "/usr/share/bash-completion/completions/aegir",
        "/usr/share/aegir/k3s/manifests/aegir.yaml",
        "/usr/share/doc/aegir/copyright",
    ] {
        ensure!(root.path(file).is_file(), "{file} is not installed");
    }
    let conf = fs::metadata(root.path("/etc/aegir/aegird.toml"))?;
    ensure!(
        conf.permissions().mode() & 0o777 == 0o644 && conf.uid() == 0,
        "/etc/aegir/aegird.toml is not root's 0644"
    );
    let state = fs::metadata(root.path("/var/lib/aegir"))?;
    let aegir_uid: u32 = root.sh("id -u aegir")?.trim().parse()?;
    ensure!(
        state.uid() == aegir_uid && state.permissions().mode() & 0o777 == 0o700,
        "/var/lib/aegir is not aegir's 0700"
    );
    println!("installed {version}: user aegir (in www-data), files, /var/lib/aegir 0700");
    Ok(())
}

/// aegird in the root, started as the unit starts it: its User=, ExecStart= and state
/// directory, on a free port.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(root: &Chroot) -> Result<Daemon> {
        let unit = fs::read_to_string(root.path("/usr/lib/systemd/system/aegird.service"))?;
        let field = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .map(str::to_string)
                .with_context(|| format!("aegird.service has no {key}"))
        };
        let exec = field("ExecStart=")?;
        let user = field("User=")?;
        let port = cmd::free_port()?;
        let mut c = root.cmd("/usr/sbin/runuser");
        c.args(["-u", &user, "--"])
            .args(exec.split_whitespace())
            .env("AEGIR_LISTEN", format!("127.0.0.1:{port}"))
            .env("STATE_DIRECTORY", "/var/lib/aegir");
        let child = c
            .spawn()
            .with_context(|| format!("starting `{}`", cmd::display(&c)))?;
        let mut daemon = Daemon { child, port };
        let url = format!("http://127.0.0.1:{port}/healthz");
        let up = cmd::wait_until("aegird in the test root", || {
            cmd::succeeds(Command::new("curl").args(["-fsS", &url]))
        });
        if let Err(e) = up {
            let _ = daemon.child.kill();
            return Err(e);
        }
        Ok(daemon)
    }

    fn get(&self, path: &str) -> Result<String> {
        cmd::output(
            Command::new("curl").args(["-fsS", &format!("http://127.0.0.1:{}{path}", self.port)]),
        )
    }

    fn api_get(&self, token: &str, path: &str) -> Result<String> {
        cmd::output(Command::new("curl").args([
            "-fsS",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("http://127.0.0.1:{}{path}", self.port),
        ]))
    }

    fn api_post(&self, token: &str, path: &str, body: &str) -> Result<String> {
        cmd::output(Command::new("curl").args([
            "-fsS",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("http://127.0.0.1:{}{path}", self.port),
        ]))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM through runuser reaches aegird, which shuts down cleanly.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// rpm's own view of the package, and an install into a scratch `rpm --root`.
fn rpm_checks(target: &Path, rpm: &Path) -> Result<()> {
    cmd::header("rpm -qpl, --scripts, and an install into rpm --root");
    let files = cmd::output(Command::new("rpm").arg("-qpl").arg(rpm))?;
    for expected in [
        "/usr/bin/aegird",
        "/usr/bin/aegir",
        "/etc/aegir/aegird.toml",
        "/usr/lib/systemd/system/aegird.service",
        "/usr/share/man/man8/aegird.8.gz",
        "/usr/share/aegir/k3s/manifests/aegir.yaml",
    ] {
        ensure!(
            files.lines().any(|l| l == expected),
            "the .rpm lacks {expected}"
        );
    }
    let config = cmd::output(Command::new("rpm").args(["-qpc"]).arg(rpm))?;
    ensure!(
        config.lines().any(|l| l == "/etc/aegir/aegird.toml"),
        "aegird.toml is not an rpm config file: {config}"
    );
    let scripts = cmd::output(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm))?;
    for expected in [
        "preinstall scriptlet",
        "useradd -r -g aegir",
        "systemctl enable --now aegird.service",
        "systemctl --no-reload disable --now aegird.service",
        "systemctl try-restart aegird.service",
    ] {
        ensure!(
            scripts.contains(expected),
            "the .rpm's scriptlets lack {expected:?}"
        );
    }
    let scratch = target.join("dist/rpmroot");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    fs::create_dir_all(&scratch)?;
    let rpm_root = |args: &[&str]| {
        let mut c = Command::new("rpm");
        c.arg("--root").arg(&scratch).args(args);
        c
    };
    cmd::run(&mut rpm_root(&["--initdb"]))?;
    // The scratch root has no shadow-utils or systemd for the scriptlets, nor the
    // dependencies: the files and the database are what this checks.
    cmd::run(rpm_root(&["-i", "--nodeps", "--noscripts"]).arg(rpm))?;
    let q = cmd::output(&mut rpm_root(&["-q", "aegir"]))?;
    ensure!(q.starts_with("aegir-"), "rpm -q aegir: {q}");
    let bin = scratch.join("usr/bin/aegird");
    ensure!(
        fs::metadata(&bin)?.permissions().mode() & 0o777 == 0o755,
        "aegird is not 0755 in the rpm root"
    );
    let version = cmd::output(Command::new(&bin).arg("--version"))?;
    ensure!(
        q.contains(version.split_whitespace().nth(1).unwrap_or("?")),
        "{version} vs {q}"
    );
    cmd::run(&mut rpm_root(&["-e", "--noscripts", "aegir"]))?;
    if bin.exists() {
        bail!("rpm -e left {}", bin.display());
    }
    fs::remove_dir_all(&scratch)?;
    println!("rpm: files, config, scriptlets, install and erase in a scratch root");
    Ok(())
}
