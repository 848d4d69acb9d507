//! Files the packages ship that are generated, not kept in git: man pages and shell
//! completions (from the binaries' own clap definitions, so they never drift from `--help`)
//! and this version's changelog. The .deb takes them from `<build>/release/dist-assets`
//! (cargo-deb's `target/release` prefix), the .rpm from the list returned.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::{dist, time};

/// Writes the generated files into `dir`; returns each as `(source, path in the package)`.
pub fn generate(
    root: &Path,
    dir: &Path,
    version: &str,
    epoch: u64,
) -> Result<Vec<(PathBuf, String)>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8], dst: String| -> Result<()> {
        let src = dir.join(name);
        fs::write(&src, bytes).with_context(|| format!("cannot write {}", src.display()))?;
        files.push((src, dst));
        Ok(())
    };

    let date = time::Utc::from_epoch(epoch).date();
    // clap keeps &'static strings; this process makes one set of pages and ends.
    let version_str: &'static str = Box::leak(version.to_string().into_boxed_str());
    let daemon = aegird::cli::aegird::Cli::command().version(version_str);
    let client = aegird::cli::aegir::Cli::command().version(version_str);
    for (cmd, section) in [(&daemon, "8"), (&client, "1")] {
        let name = cmd.get_name().to_string();
        let page = man_page(cmd.clone(), section, &date, version)?;
        put(
            &format!("{name}.{section}.gz"),
            &gzip(&page)?,
            format!("/usr/share/man/man{section}/{name}.{section}.gz"),
        )?;
        for (shell, dst) in [
            (
                Shell::Bash,
                format!("/usr/share/bash-completion/completions/{name}"),
            ),
            (
                Shell::Zsh,
                format!("/usr/share/zsh/vendor-completions/_{name}"),
            ),
            (
                Shell::Fish,
                format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
            ),
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
            put(&format!("{name}.{shell}"), &buf, dst)?;
        }
    }

    let text = debian_changelog(version, epoch);
    // A version without a Debian revision is a native package: its changelog is changelog.gz.
    put(
        "changelog.gz",
        &gzip(text.as_bytes())?,
        "/usr/share/doc/aegir/changelog.gz".into(),
    )?;
    // Through dist-assets, so that test-install can package an earlier version with the
    // configuration file of its time.
    put(
        "aegird.toml",
        &fs::read(root.join("packaging/aegird.toml"))?,
        "/etc/aegir/aegird.toml".into(),
    )?;
    Ok(files)
}

fn man_page(cmd: clap::Command, section: &str, date: &str, version: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .section(section)
        .date(date)
        .source(format!("aegir {version}"))
        .manual("Aegir")
        .render(&mut buf)
        .context("rendering a man page")?;
    Ok(buf)
}

/// gzip -9n: no name and no time in the header, as Debian policy asks of man pages.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// One entry per release: the tag is the whole of a release's process, so its entry is
/// written here rather than by hand.
fn debian_changelog(version: &str, epoch: u64) -> String {
    format!(
        "aegir ({version}) unstable; urgency=medium\n\n  \
         * Release {version}; its changes are listed in the release notes at\n    \
         {home}/-/releases/v{version}\n\n -- {maintainer}  {date}\n",
        home = dist::HOMEPAGE,
        maintainer = dist::MAINTAINER,
        date = time::Utc::from_epoch(epoch).rfc2822(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_come_from_the_real_commands() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(&crate::workspace_root(), dir.path(), "1.2.3", 86400 * 365).unwrap();
        let dsts: Vec<&str> = files.iter().map(|(_, d)| d.as_str()).collect();
        assert!(
            dsts.contains(&"/usr/share/man/man8/aegird.8.gz"),
            "{dsts:?}"
        );
        assert!(dsts.contains(&"/usr/share/man/man1/aegir.1.gz"), "{dsts:?}");
        assert!(dsts.contains(&"/usr/share/bash-completion/completions/aegir"));
        let bash = fs::read_to_string(dir.path().join("aegir.bash")).unwrap();
        assert!(
            bash.contains("backup"),
            "the CLI's subcommands are completed"
        );
        let mut page = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(fs::File::open(dir.path().join("aegird.8.gz")).unwrap())
            .read_to_string(&mut page)
            .unwrap();
        assert!(
            page.contains(".TH aegird 8 1971-01-01 \"aegir 1.2.3\" Aegir"),
            "{page}"
        );
        let mut changelog = String::new();
        flate2::read::GzDecoder::new(fs::File::open(dir.path().join("changelog.gz")).unwrap())
            .read_to_string(&mut changelog)
            .unwrap();
        assert!(
            changelog.starts_with("aegir (1.2.3) unstable; urgency=medium"),
            "{changelog}"
        );
        assert!(
            changelog.contains("Fri, 01 Jan 1971 00:00:00 +0000"),
            "{changelog}"
        );
    }
}
