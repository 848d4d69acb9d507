//! `cargo xtask dist`: the release artifacts (.deb, .rpm, OCI image, SBOM, SHA256SUMS), built
//! so that two runs with the same `SOURCE_DATE_EPOCH` give byte-identical files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::{assets, cmd, oci, sbom, tools};

pub struct Options {
    /// X.Y.Z; default: the tag CI builds (`CI_COMMIT_TAG` = vX.Y.Z), else the workspace's.
    pub version: Option<String>,
    /// Where the artifacts go (default: `<target>/dist/out`).
    pub out: Option<PathBuf>,
    /// Build in this target directory instead of `<target>/dist/build` (a second, cold build
    /// is how `check-dist --rebuild` proves the build itself reproducible).
    pub build_dir: Option<PathBuf>,
    pub install: bool,
}

/// The target directory cargo uses for this workspace.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
}

pub fn version(explicit: Option<&str>) -> Result<String> {
    let version = match explicit {
        Some(v) => v.to_string(),
        None => match std::env::var("CI_COMMIT_TAG") {
            Ok(tag) if !tag.is_empty() => tag
                .strip_prefix('v')
                .with_context(|| format!("CI_COMMIT_TAG={tag}: release tags are vX.Y.Z"))?
                .to_string(),
            _ => env!("CARGO_PKG_VERSION").to_string(),
        },
    };
    // Plain X.Y.Z: the same string is valid for dpkg, rpm, OCI tags and GitLab's generic
    // package registry (which refuses `~`).
    let parts: Vec<&str> = version.split('.').collect();
    ensure!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit())),
        "version {version:?} is not X.Y.Z (digits only)"
    );
    Ok(version)
}

/// `SOURCE_DATE_EPOCH`, else the time of the commit being built.
pub fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let out = cmd::output(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root),
    )
    .context("SOURCE_DATE_EPOCH is not set and git cannot tell the commit time")?;
    out.trim()
        .parse()
        .with_context(|| format!("git log printed {out:?}, not a time"))
}

fn git_revision(root: &Path) -> Option<String> {
    cmd::output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(root),
    )
    .ok()
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let started = std::time::Instant::now();
    let version = version(opts.version.as_deref())?;
    let epoch = source_date_epoch(root)?;
    let target = target_dir(root);
    let build_dir = opts
        .build_dir
        .clone()
        .unwrap_or_else(|| target.join("dist/build"));
    let out = opts.out.clone().unwrap_or_else(|| target.join("dist/out"));
    // cargo-deb reads `target/release/...` assets from the build's release directory.
    let gen = build_dir.join("release/dist-assets");
    eprintln!(
        "dist: aegir {version}, SOURCE_DATE_EPOCH={epoch}, into {}",
        out.display()
    );

    let mut apt = crate::apt::Apt::new(opts.install);
    let cargo_deb = tools::cargo_deb(opts.install)?;
    let nfpm = tools::nfpm(opts.install)?;
    tools::ensure_command(&mut apt, "dpkg-deb", "dpkg")?;

    build(root, &build_dir, &version, epoch)?;
    let bin = build_dir.join("release");

    if gen.exists() {
        fs::remove_dir_all(&gen)?;
    }
    assets::generate(root, &gen, &version, epoch)?;
    let files = package_files(root, &build_dir)?;
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    fs::create_dir_all(&out)?;

    let deb = out.join(format!("aegir_{version}_amd64.deb"));
    deb_package(root, &cargo_deb, &build_dir, &version, epoch, &deb)?;
    let rpm = out.join(format!("aegir-{version}-1.x86_64.rpm"));
    rpm_package(root, &nfpm, &gen, &files, &version, epoch, &rpm)?;
    let image = out.join(format!("aegir-{version}-oci.tar"));
    oci::write_image(
        &image,
        &oci::ImageSpec {
            version: &version,
            source_date_epoch: epoch,
            revision: git_revision(root).as_deref(),
            aegird: &bin.join("aegird"),
            aegir: &bin.join("aegir"),
        },
    )?;
    let sbom_name = format!("aegir-{version}.cdx.json");
    sbom::write(root, &out.join(&sbom_name), &version, epoch)?;

    let mut artifacts = vec![
        file_name(&deb),
        file_name(&rpm),
        file_name(&image),
        sbom_name,
    ];
    artifacts.sort();
    write_sums(&out, &artifacts)?;
    artifacts.push("SHA256SUMS".into());
    for name in &artifacts {
        let size = fs::metadata(out.join(name))?.len();
        eprintln!("dist: {name} ({:.1} MiB)", size as f64 / (1 << 20) as f64);
    }
    eprintln!("dist: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The one file in `dir` (where `dist` wrote) whose name ends with `suffix`.
pub fn artifact(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("no {} (run `cargo xtask dist` first)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    match &found[..] {
        [one] => Ok(one.clone()),
        [] => bail!("no *{suffix} in {} (run `cargo xtask dist`)", dir.display()),
        _ => bail!("several *{suffix} in {}", dir.display()),
    }
}

/// The version of the artifacts a SHA256SUMS lists, from its .deb's name.
pub fn version_in_sums(sums: &str) -> Result<String> {
    sums.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find_map(|f| f.strip_prefix("aegir_")?.strip_suffix("_amd64.deb"))
        .map(str::to_string)
        .context("no .deb listed in SHA256SUMS")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The release binaries, with every path that could differ between checkouts remapped and the
/// version the packages carry compiled in.
fn build(root: &Path, build_dir: &Path, version: &str, epoch: u64) -> Result<()> {
    let cargo_home = tools::cargo_home()?;
    let rustflags = format!(
        "--remap-path-prefix={}=/build/aegir --remap-path-prefix={}=/cargo",
        root.display(),
        cargo_home.display()
    );
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "-p", "aegird", "--bins"])
            .arg("--target-dir")
            .arg(build_dir)
            .current_dir(root)
            .env("RUSTFLAGS", rustflags)
            // Stripped, as Debian policy asks of packaged binaries (lintian: an error
            // otherwise); debug info would also quadruple the packages and the image.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("AEGIR_VERSION", version),
    )
}

/// The .deb of the binaries in `build_dir/release` (and its dist-assets), by cargo-deb.
pub fn deb_package(
    root: &Path,
    cargo_deb: &Path,
    build_dir: &Path,
    version: &str,
    epoch: u64,
    deb: &Path,
) -> Result<()> {
    cmd::run(
        Command::new(cargo_deb)
            .args([
                "deb",
                "-p",
                "aegird",
                "--no-build",
                "--no-strip",
                "--locked",
            ])
            .args(["--deb-version", version])
            .arg("--output")
            .arg(deb)
            .current_dir(root)
            // cargo-deb finds the binaries and dist-assets through cargo's target directory.
            .env("CARGO_TARGET_DIR", build_dir)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )
}

/// One file the packages install: where it comes from, where it goes, its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    pub src: PathBuf,
    pub dst: String,
    pub mode: u32,
}

/// The packages' files, as `[package.metadata.deb].assets` in aegird/Cargo.toml lists them
/// (the one list: the .rpm ships the same files as the .deb), with cargo-deb's path rules:
/// `target/release/` is the build's release directory, other paths are relative to aegird/,
/// a `*` in the file name is a glob, and a destination ending in `/` is a directory.
pub fn package_files(root: &Path, build_dir: &Path) -> Result<Vec<PackageFile>> {
    let manifest = root.join("aegird/Cargo.toml");
    let text = fs::read_to_string(&manifest)?;
    let doc: toml::Value = toml::from_str(&text).context("parsing aegird/Cargo.toml")?;
    let assets = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("deb"))
        .and_then(|d| d.get("assets"))
        .and_then(|a| a.as_array())
        .context("aegird/Cargo.toml has no [package.metadata.deb] assets")?;
    let mut files = Vec::new();
    for asset in assets {
        let fields: Vec<&str> = asset
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let [src, dst, mode] = fields[..] else {
            bail!("deb asset {asset} is not [source, destination, mode]");
        };
        let mode = u32::from_str_radix(mode, 8).with_context(|| format!("mode of {src}"))?;
        // Without `..`: nfpm refuses paths that have it.
        let src_path = match (src.strip_prefix("target/release/"), src.strip_prefix("../")) {
            (Some(rest), _) => build_dir.join("release").join(rest),
            (None, Some(rest)) => root.join(rest),
            (None, None) => root.join("aegird").join(src),
        };
        let sources = match src_path.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.contains('*') => glob_dir(&src_path, name)?,
            _ => vec![src_path],
        };
        for source in sources {
            let dst = if dst.ends_with('/') {
                let name = source.file_name().context("asset without a file name")?;
                format!("/{dst}{}", name.to_string_lossy())
            } else {
                format!("/{dst}")
            };
            files.push(PackageFile {
                src: source,
                dst,
                mode,
            });
        }
    }
    Ok(files)
}

/// The files of `pattern`'s directory whose names match its `*` (one star: all we use).
fn glob_dir(pattern: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let dir = pattern.parent().context("glob without a directory")?;
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    found.sort();
    ensure!(!found.is_empty(), "{} matches no file", pattern.display());
    Ok(found)
}

fn rpm_package(
    root: &Path,
    nfpm: &Path,
    gen: &Path,
    files: &[PackageFile],
    version: &str,
    epoch: u64,
    rpm: &Path,
) -> Result<()> {
    // RPM's %changelog, in the chglog format nfpm reads.
    fs::write(
        gen.join("changelog.yaml"),
        serde_json::to_vec_pretty(&serde_json::json!([{
            "semver": version,
            "date": crate::time::Utc::from_epoch(epoch).rfc3339(),
            "packager": MAINTAINER,
            "changes": [{ "note": format!(
                "Release {version}; its changes are listed in the release notes at \
                 {HOMEPAGE}/-/releases/v{version}"
            ) }],
        }]))?,
    )?;
    let config = gen.join("nfpm.json");
    fs::write(
        &config,
        serde_json::to_vec_pretty(&nfpm_config(root, gen, files, version))?,
    )?;
    cmd::run(
        Command::new(nfpm)
            .args(["package", "--packager", "rpm", "--config"])
            .arg(&config)
            .arg("--target")
            .arg(rpm)
            .current_dir(root)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )
}

/// nfpm's configuration (JSON is YAML): the .deb's files, RPM's scriptlets.
fn nfpm_config(root: &Path, gen: &Path, files: &[PackageFile], version: &str) -> serde_json::Value {
    let contents: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let mut entry = serde_json::json!({
                "src": f.src, "dst": f.dst,
                "file_info": { "mode": f.mode, "owner": "root", "group": "root" },
            });
            if f.dst.starts_with("/etc/") {
                // An admin's edits survive upgrades, as with a dpkg conffile.
                entry["type"] = "config|noreplace".into();
            } else if f.dst.starts_with("/usr/share/doc/") || f.dst.starts_with("/usr/share/man/") {
                entry["type"] = "doc".into();
            }
            entry
        })
        // What cargo-deb adds by itself: the unit and sysusers file (systemd-units) and the
        // copyright file.
        .chain(
            [
                (
                    "systemd/aegird.service",
                    "/usr/lib/systemd/system/aegird.service",
                ),
                ("systemd/aegir.sysusers", "/usr/lib/sysusers.d/aegir.conf"),
                (
                    "packaging/debian/copyright",
                    "/usr/share/doc/aegir/copyright",
                ),
            ]
            .map(|(src, dst)| {
                let mut entry = serde_json::json!({
                    "src": root.join(src), "dst": dst,
                    "file_info": { "mode": 0o644, "owner": "root", "group": "root" },
                });
                if dst.starts_with("/usr/share/doc/") {
                    entry["type"] = "doc".into();
                }
                entry
            }),
        )
        .collect();
    serde_json::json!({
        "name": "aegir",
        "arch": "amd64",
        "platform": "linux",
        "version": version,
        "release": "1",
        "section": "admin",
        "maintainer": MAINTAINER,
        "description": wrap(DESCRIPTION, 79),
        "changelog": gen.join("changelog.yaml"),
        "vendor": "Aegir",
        "homepage": HOMEPAGE,
        "license": "GPL-2.0-or-later",
        "depends": ["openssh-clients", "shadow-utils"],
        "contents": contents,
        "scripts": {
            "preinstall": root.join("packaging/rpm/preinstall.sh"),
            "postinstall": root.join("packaging/rpm/postinstall.sh"),
            "preremove": root.join("packaging/rpm/preremove.sh"),
            "postremove": root.join("packaging/rpm/postremove.sh"),
        },
        "rpm": {
            "group": "System Environment/Daemons",
            // The build host is recorded in the header: a fixed one keeps the file reproducible.
            "buildhost": "aegir-build",
            "summary": capitalized(SUMMARY),
            "compression": "zstd",
        },
    })
}

pub const MAINTAINER: &str = "Aegir developers <aegir@example.org>";
pub const HOMEPAGE: &str = "https://gitlab.com/aegir/aegir";
pub const SUMMARY: &str = "hosting control plane for Drupal and WordPress sites";
pub const DESCRIPTION: &str = "Aegir keeps an inventory of servers, releases and sites and runs \
operations on them (install, verify, backup, restore, clone, delete) from a JSON API, a web UI \
and the aegir command-line client. It manages nginx, PHP-FPM and MariaDB over SSH, keeps its \
state in SQLite or PostgreSQL, and imports an existing Aegir 3 installation.";

/// Lines of at most `width` characters (rpmlint refuses longer description lines).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out + &line
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn write_sums(out: &Path, names: &[String]) -> Result<()> {
    let mut sums = String::new();
    for name in names {
        let mut hasher = Sha256::new();
        let mut f = fs::File::open(out.join(name))?;
        std::io::copy(&mut f, &mut hasher)?;
        sums.push_str(&format!("{:x}  {name}\n", hasher.finalize()));
    }
    let mut f = fs::File::create(out.join("SHA256SUMS"))?;
    f.write_all(sums.as_bytes())?;
    Ok(())
}

/// Fails unless both directories hold the same SHA256SUMS, naming the files that differ.
pub fn compare_sums(a: &Path, b: &Path) -> Result<()> {
    let read = |d: &Path| {
        fs::read_to_string(d.join("SHA256SUMS"))
            .with_context(|| format!("no SHA256SUMS in {}", d.display()))
    };
    let (sa, sb) = (read(a)?, read(b)?);
    if sa == sb {
        return Ok(());
    }
    let differ: Vec<&str> = sa
        .lines()
        .filter(|l| !sb.lines().any(|m| m == *l))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    bail!(
        "the two builds differ: {} (compare {} and {} with diffoscope)",
        differ.join(", "),
        a.display(),
        b.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The .deb's list names every generated file, and each file it names from the tree exists.
    #[test]
    fn the_package_list_and_the_generated_files_agree() {
        let root = crate::workspace_root();
        let build = tempfile::tempdir().unwrap();
        let gen = build.path().join("release/dist-assets");
        let generated = crate::assets::generate(&root, &gen, "1.2.3", 0).unwrap();
        let files = package_files(&root, build.path()).unwrap();
        for (src, dst) in &generated {
            let listed = files.iter().find(|f| &f.dst == dst);
            assert_eq!(listed.map(|f| &f.src), Some(src), "{dst} is not packaged");
        }
        for f in files.iter().filter(|f| !f.src.starts_with(build.path())) {
            assert!(f.src.is_file(), "{} is listed but missing", f.src.display());
        }
        let dsts: Vec<&str> = files.iter().map(|f| f.dst.as_str()).collect();
        assert!(
            dsts.contains(&"/usr/share/aegir/k3s/manifests/aegir.yaml"),
            "{dsts:?}"
        );
        assert!(dsts.contains(&"/etc/aegir/aegird.toml"));
    }

    #[test]
    fn descriptions_wrap_at_the_width() {
        let wrapped = wrap(DESCRIPTION, 79);
        assert!(wrapped.lines().all(|l| l.len() <= 79), "{wrapped}");
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>().join(" "),
            DESCRIPTION
        );
        assert_eq!(capitalized("hosting"), "Hosting");
    }

    #[test]
    fn versions_are_plain_numbers() {
        assert_eq!(version(Some("1.2.3")).unwrap(), "1.2.3");
        for bad in ["1.2", "1.2.3~rc1", "v1.2.3", "1..3", "1.2.3.4", "a.b.c"] {
            assert!(version(Some(bad)).is_err(), "{bad} accepted");
        }
    }
}
