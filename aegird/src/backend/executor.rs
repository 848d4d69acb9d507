//! Running commands on a server's host. Steps see only [`HostExecutor`], so the same step works
//! on the local host and (with the server backend) over SSH.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

/// At most this much of a command's output is kept; the rest is cut and said so.
const MAX_OUTPUT: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    /// The host could not be reached (SSH failed before the command ran).
    #[error("cannot reach {target}: {message}")]
    Unreachable { target: String, message: String },
    #[error("I/O error running {program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// What a finished command printed and returned.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[async_trait]
pub trait HostExecutor: Send + Sync {
    /// "the local host", "aegir@web1.example.org:22", for logs.
    fn describe(&self) -> String;
    /// Run `program` with `args` (no shell unless the program is one).
    async fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput, ExecError>;
}

/// The machine aegird runs on.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    pub timeout: Duration,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
        }
    }
}

/// Service binaries live in sbin directories, which an ordinary user's PATH often lacks.
fn search_path() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
    ] {
        if !path.split(':').any(|p| p == extra) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(extra);
        }
    }
    path
}

pub(crate) fn lossy_capped(bytes: &[u8]) -> String {
    if bytes.len() > MAX_OUTPUT {
        let mut s = String::from_utf8_lossy(&bytes[..MAX_OUTPUT]).into_owned();
        s.push_str("\n[output cut]");
        s
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

#[async_trait]
impl HostExecutor for LocalExecutor {
    fn describe(&self) -> String {
        "the local host".into()
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput, ExecError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env("PATH", search_path())
            // Parsable, untranslated output from every tool.
            .env("LC_ALL", "C");
        let out = run_process(cmd, program, program, self.timeout).await?;
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: lossy_capped(&out.stdout),
            stderr: lossy_capped(&out.stderr),
        })
    }
}

/// Spawn `cmd` without stdin, collect its output, and kill it if it outlives `timeout` or
/// its caller gives up (a cancelled or timed-out step must not leave it running).
/// `spawned` names the program started, `what` the work it does, for the errors.
pub(crate) async fn run_process(
    mut cmd: tokio::process::Command,
    spawned: &str,
    what: &str,
    timeout: Duration,
) -> Result<std::process::Output, ExecError> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: spawned.to_string(),
            source,
        })?;
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ExecError::Timeout {
            program: what.to_string(),
            timeout,
        })?
        .map_err(|source| ExecError::Io {
            program: spawned.to_string(),
            source,
        })
}

/// Quote a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_and_captures() {
        let x = LocalExecutor::default();
        let out = x
            .run("sh", &["-c", "echo out; echo err >&2; exit 3"])
            .await
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(matches!(
            x.run("/nonexistent/prog", &[]).await,
            Err(ExecError::Spawn { .. })
        ));
    }

    #[tokio::test]
    async fn times_out() {
        let x = LocalExecutor {
            timeout: Duration::from_millis(100),
        };
        assert!(matches!(
            x.run("sleep", &["5"]).await,
            Err(ExecError::Timeout { .. })
        ));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
