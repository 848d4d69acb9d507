//! `cargo xtask check-dist`: the release gates on what `dist` wrote: lintian, rpmlint, the
//! systemd unit's verification and exposure score, the image under podman, and (with
//! `--rebuild`) a second, separate build that must give the same SHA256SUMS.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::apt::Apt;
use crate::{cmd, dist, tools};

/// The highest `systemd-analyze security` exposure the unit may have (in tenths: 3.0).
const MAX_EXPOSURE_TENTHS: u32 = 30;

pub struct Options {
    pub out: Option<PathBuf>,
    pub install: bool,
    /// Build everything again in a separate target directory and compare the checksums.
    pub rebuild: bool,
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let target = dist::target_dir(root);
    let out = opts.out.clone().unwrap_or_else(|| target.join("dist/out"));
    let deb = dist::artifact(&out, ".deb")?;
    let rpm = dist::artifact(&out, ".rpm")?;
    let image = dist::artifact(&out, "-oci.tar")?;
    let mut apt = Apt::new(opts.install);
    for (program, package) in [
        ("lintian", "lintian"),
        ("rpmlint", "rpmlint"),
        ("rpm", "rpm"),
        ("podman", "podman"),
        ("runc", "runc"),
        ("skopeo", "skopeo"),
        ("systemd-analyze", "systemd"),
    ] {
        tools::ensure_command(&mut apt, program, package)?;
    }

    lintian(&deb)?;
    rpmlint(&rpm)?;
    let unit = systemd_unit(&deb)?;
    image_answers(&image)?;
    eprintln!("check-dist: {}", unit);
    if opts.rebuild {
        rebuild_matches(root, &target, &out, opts.install)?;
    }
    Ok(())
}

/// lintian --pedantic: no error and no warning (overrides ship in the package, each with
/// its reason).
fn lintian(deb: &Path) -> Result<()> {
    cmd::header("lintian --pedantic");
    let out = cmd::capture(
        Command::new("lintian")
            .args(["--pedantic", "--display-info", "--tag-display-limit", "0"])
            .arg(deb),
    )?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    print!("{text}");
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    ensure!(
        bad.is_empty(),
        "lintian found {} errors or warnings:\n{}",
        bad.len(),
        bad.join("\n")
    );
    println!("lintian: no errors, no warnings");
    Ok(())
}

/// rpmlint: no errors but the missing signature (packages are signed by the repository that
/// publishes them, not at build time).
fn rpmlint(rpm: &Path) -> Result<()> {
    cmd::header("rpmlint");
    let out = cmd::capture(Command::new("rpmlint").arg(rpm))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    print!("{text}");
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": E: ") && !l.contains("no-signature"))
        .collect();
    ensure!(
        errors.is_empty(),
        "rpmlint found errors:\n{}",
        errors.join("\n")
    );
    Ok(())
}

/// `systemd-analyze verify` prints nothing, and the exposure score is at most 3.0; returns
/// the score line.
fn systemd_unit(deb: &Path) -> Result<String> {
    cmd::header("systemd-analyze verify and security");
    let root = tempfile_dir("aegir-check-dist")?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    let unit = root.join("usr/lib/systemd/system/aegird.service");
    ensure!(unit.is_file(), "the .deb has no aegird.service");
    // Verify against the package's own tree, where the unit's ExecStart is checked, with
    // systemd's standard targets (sysinit.target...) copied in from the host's systemd: the
    // unit's implicit dependencies must resolve.
    let units = root.join("usr/lib/systemd/system");
    for entry in fs::read_dir("/usr/lib/systemd/system")? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".target") && path.is_file() {
            fs::copy(&path, units.join(&*name))?;
        }
    }
    let verify = cmd::capture(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--generators=no"])
            .arg(format!("--root={}", root.display()))
            .arg("/usr/lib/systemd/system/aegird.service"),
    )?;
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    // It exits 0 on warnings: anything printed is a failure.
    ensure!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );
    println!("systemd-analyze verify: nothing to say");
    let security = cmd::capture(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(format!("--threshold={MAX_EXPOSURE_TENTHS}"))
            .arg(&unit),
    )?;
    let text = String::from_utf8_lossy(&security.stdout).into_owned();
    let score = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(|l| l.trim().to_string())
        .context("systemd-analyze security printed no overall exposure level")?;
    println!("{score}");
    ensure!(
        security.status.success(),
        "exposure above {}.{}: {score}",
        MAX_EXPOSURE_TENTHS / 10,
        MAX_EXPOSURE_TENTHS % 10
    );
    let _ = fs::remove_dir_all(&root);
    Ok(score)
}

fn tempfile_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The image runs under podman (runc, as the packages' users would) and answers /healthz.
fn image_answers(image: &Path) -> Result<()> {
    cmd::header("OCI image under podman");
    cmd::run(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", image.display())),
    )?;
    let port = cmd::free_port()?;
    let name = format!("aegir-check-dist-{}", std::process::id());
    let podman = || {
        let mut c = Command::new("podman");
        // No systemd and no cgroup manager here; runc as Debian's podman users have it.
        c.args([
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
        c
    };
    cmd::run(
        podman()
            .args(["run", "--rm", "-d", "--name", &name])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .args(["-p", &format!("127.0.0.1:{port}:7270")])
            .arg(format!("oci-archive:{}", image.display())),
    )?;
    let url = format!("http://127.0.0.1:{port}/healthz");
    let answered = cmd::wait_until("the image's /healthz", || {
        cmd::succeeds(Command::new("curl").args(["-fsS", &url]))
    });
    if answered.is_err() {
        let _ = cmd::run(podman().args(["logs", &name]));
    }
    let _ = cmd::run(podman().args(["stop", "-t", "5", &name]));
    answered?;
    println!("the image answers {url} with 200");
    Ok(())
}

/// A second build from nothing, in its own target directory, with the same inputs: the
/// checksums must match the first.
fn rebuild_matches(root: &Path, target: &Path, out: &Path, install: bool) -> Result<()> {
    cmd::header("A second build from a clean target directory");
    let build_dir = target.join("dist/rebuild");
    if build_dir.exists() {
        fs::remove_dir_all(&build_dir)?;
    }
    let sums = fs::read_to_string(out.join("SHA256SUMS"))?;
    let version = dist::version_in_sums(&sums)?;
    let second = target.join("dist/out-rebuild");
    dist::run(
        root,
        &dist::Options {
            version: Some(version),
            out: Some(second.clone()),
            build_dir: Some(build_dir),
            install,
        },
    )?;
    dist::compare_sums(out, &second)?;
    println!("the second build's SHA256SUMS are identical");
    Ok(())
}
