//! Process helpers: print step headers, echo and run commands, turn a bad exit into an error.

use std::env;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a service may take from being started to answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `answers` until it holds, failing after [`START_TIMEOUT`]: for a service just
/// started.
pub fn wait_until(name: &str, answers: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !answers() {
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer within {}s of starting",
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// Prints the header line that opens one step of a task.
pub fn header(title: &str) {
    println!("==> {title}");
}

/// Echoes `cmd`, runs it with output streaming to ours, and fails unless it exits 0.
///
/// Stdin is closed: CI has none, and a command that wants to ask something must fail rather
/// than hang.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("$ {shown}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Test counts summed over every `test result:` line cargo's test binaries print.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Adds a libtest summary such as
    /// `test result: ok. 22 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Echoes and runs a `cargo test`, passing its output through line by line while counting
/// the tests; returns its exit status and the counts.
pub fn run_counting_tests(cmd: &mut Command) -> Result<(std::process::ExitStatus, Tally)> {
    use std::io::{BufRead, BufReader, Write};
    let shown = display(cmd);
    println!("$ {shown}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let mut tally = Tally::default();
    let stdout = child.stdout.take().context("test output")?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        tally.add_line(&line);
        writeln!(out, "{line}")?;
    }
    drop(out);
    Ok((child.wait()?, tally))
}

/// Runs `cmd` silently and captures its output, for probes whose failure we explain ourselves.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs `cmd` and returns its standard output; fails with its standard error if it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        anyhow::bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Whether `cmd` runs and exits 0, with all its output discarded.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Finds an executable on `PATH`, then in the sbin directories a non-login root shell may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server the checks start.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether we run with effective uid 0; installing packages and starting services needs it.
pub fn is_root() -> bool {
    // The `Uid:` line of /proc/self/status lists real, effective, saved and fs uids.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// The cargo that runs us (`CARGO` is set by `cargo run`), so the toolchain stays the same.
pub fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The command line as a shell would accept it, for echoing and error messages.
pub fn display(cmd: &Command) -> String {
    let mut shown = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(shown, "{}={} ", key.to_string_lossy(), quote(value));
        }
    }
    shown.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&quote(arg));
    }
    shown
}

fn quote(word: &OsStr) -> String {
    let word = redact(&word.to_string_lossy());
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        word
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Hides the password of a URL (`scheme://user:password@host`), so echoed commands leak none.
fn redact(word: &str) -> String {
    let Some(scheme_end) = word.find("://").map(|i| i + 3) else {
        return word.to_owned();
    };
    let authority_end = word[scheme_end..]
        .find('/')
        .map_or(word.len(), |i| scheme_end + i);
    let authority = &word[scheme_end..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}***{}",
            &word[..scheme_end + colon + 1],
            &word[scheme_end + at..]
        ),
        _ => word.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_adds_every_libtest_summary() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 22 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 20.24s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("test engine::x ... ok");
        t.add_line("running 5 tests");
        assert_eq!(
            t,
            Tally {
                passed: 25,
                failed: 2,
                ignored: 1
            }
        );
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("psql");
        cmd.env("PGCONNECT_TIMEOUT", "5").args([
            "-c",
            "select 1",
            "it's",
            "postgres://u@h:5432/db",
        ]);
        assert_eq!(
            display(&cmd),
            r"PGCONNECT_TIMEOUT=5 psql -c 'select 1' 'it'\''s' postgres://u@h:5432/db"
        );
    }

    #[test]
    fn display_hides_url_passwords() {
        let mut cmd = Command::new("psql");
        cmd.env("URL", "postgres://u:secret@h:5432/db")
            .arg("postgres://u:secret@h/db")
            .arg("https://example.com/a:b@c");
        assert_eq!(
            display(&cmd),
            "URL='postgres://u:***@h:5432/db' psql 'postgres://u:***@h/db' https://example.com/a:b@c"
        );
    }

    #[test]
    fn finds_a_program_everyone_has() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-no-such-program-here").is_none());
    }
}
