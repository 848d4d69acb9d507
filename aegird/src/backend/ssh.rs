//! Reaching a server over SSH with the system OpenSSH client, as Aegir 3 did: aegird's own
//! key (generated once, kept in the state directory), the server's host key pinned in the
//! store when the server is added, and one multiplexed connection per server (a control
//! socket) so a verify's dozen commands cost one handshake.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

use super::executor::{
    lossy_capped, rsync, run_process, shell_quote, CommandOutput, ExecError, HostExecutor,
};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("cannot make aegird's SSH key in {dir}: {message}")]
    Key { dir: PathBuf, message: String },
    #[error("no SSH host key from {host} port {port}: {message}")]
    Scan {
        host: String,
        port: u16,
        message: String,
    },
}

/// aegird's SSH identity and its working files, under `<state-dir>/ssh`.
#[derive(Debug, Clone)]
pub struct SshKeys {
    dir: PathBuf,
}

impl SshKeys {
    pub fn new(dir: impl Into<PathBuf>) -> SshKeys {
        SshKeys { dir: dir.into() }
    }

    fn private_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// aegird's public key, made on first use (the private key stays 0600 in the state dir).
    pub async fn public_key(&self) -> Result<String, SshError> {
        let key = self.private_key();
        let public = key.with_extension("pub");
        if !key.exists() {
            make_private_dir(&self.dir).map_err(|e| SshError::Key {
                dir: self.dir.clone(),
                message: e.to_string(),
            })?;
            let out = tokio::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "aegird", "-f"])
                .arg(&key)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|source| SshError::Spawn {
                    program: "ssh-keygen",
                    source,
                })?;
            if !out.status.success() {
                return Err(SshError::Key {
                    dir: self.dir.clone(),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        std::fs::read_to_string(&public)
            .map(|s| s.trim().to_string())
            .map_err(|e| SshError::Key {
                dir: self.dir.clone(),
                message: format!("{}: {e}", public.display()),
            })
    }

    /// The host keys a server presents now, as known_hosts lines, to pin in the store.
    pub async fn scan_host_key(&self, host: &str, port: u16) -> Result<String, SshError> {
        let out = tokio::process::Command::new("ssh-keyscan")
            .args([
                "-T",
                "5",
                "-p",
                &port.to_string(),
                "-t",
                "ed25519,ecdsa,rsa",
                "--",
            ])
            .arg(host)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| SshError::Spawn {
                program: "ssh-keyscan",
                source,
            })?;
        let keys: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap_or("")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        if keys.is_empty() {
            return Err(SshError::Scan {
                host: host.into(),
                port,
                message: "nothing answered within 5 s (is sshd running and reachable?)".into(),
            });
        }
        Ok(keys.join("\n"))
    }

    /// Close the multiplexed connections this daemon left open (on shutdown: they would
    /// otherwise linger for ControlPersist after aegird has gone).
    pub async fn close_connections(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("cm")) else {
            return;
        };
        for entry in entries.flatten() {
            let _ = tokio::process::Command::new("ssh")
                .args(["-F", "/dev/null", "-o"])
                .arg(format!("ControlPath={}", entry.path().display()))
                // The host name is required and ignored: the control socket names the host.
                .args(["-O", "exit", "aegird-control"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await;
        }
    }

    /// An executor for one server, trusting only the host key pinned for it.
    pub fn executor(
        &self,
        server_id: i64,
        user: &str,
        host: &str,
        port: u16,
        pinned_host_key: &str,
    ) -> Result<SshExecutor, std::io::Error> {
        let known = self.dir.join("known_hosts");
        make_private_dir(&known)?;
        let known_hosts = known.join(format!("server-{server_id}"));
        // Rewritten from the store each time: the store holds the pin, this file only hands
        // it to ssh.
        std::fs::write(&known_hosts, format!("{pinned_host_key}\n"))?;
        let cm = self.dir.join("cm");
        make_private_dir(&cm)?;
        Ok(SshExecutor {
            user: user.into(),
            host: host.into(),
            port,
            key: self.private_key(),
            known_hosts,
            control_path: cm.join("%C"),
            timeout: Duration::from_secs(120),
        })
    }
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A server reached over SSH.
#[derive(Debug, Clone)]
pub struct SshExecutor {
    user: String,
    host: String,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    control_path: PathBuf,
    timeout: Duration,
}

impl SshExecutor {
    fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// ssh's own options: our key only, our pin only, never a prompt, one shared
    /// connection.
    fn ssh_options(&self) -> Vec<String> {
        let mut args = vec!["-F".to_string(), "/dev/null".to_string()];
        for (k, v) in [
            ("BatchMode", "yes".to_string()),
            ("IdentitiesOnly", "yes".to_string()),
            ("IdentityFile", self.key.display().to_string()),
            ("UserKnownHostsFile", self.known_hosts.display().to_string()),
            ("GlobalKnownHostsFile", "/dev/null".to_string()),
            ("StrictHostKeyChecking", "yes".to_string()),
            ("ControlMaster", "auto".to_string()),
            ("ControlPath", self.control_path.display().to_string()),
            ("ControlPersist", "60".to_string()),
            ("ConnectTimeout", "10".to_string()),
            ("ServerAliveInterval", "15".to_string()),
        ] {
            args.push("-o".into());
            args.push(format!("{k}={v}"));
        }
        args.extend([
            "-p".into(),
            self.port.to_string(),
            "-l".into(),
            self.user.clone(),
        ]);
        args
    }
}

/// The remote command line: the remote shell splits it again, so every word is quoted; the
/// sbin directories and the C locale match what the local executor gives a command.
fn remote_command(program: &str, args: &[&str]) -> String {
    let mut cmd =
        String::from("env LC_ALL=C PATH=\"$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin\" ");
    cmd.push_str(&shell_quote(program));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    cmd
}

#[async_trait]
impl HostExecutor for SshExecutor {
    fn describe(&self) -> String {
        self.target()
    }

    async fn run_input(
        &self,
        program: &str,
        args: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<CommandOutput, ExecError> {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(self.ssh_options())
            .arg(&self.host)
            .arg("--")
            .arg(remote_command(program, args));
        let what = format!("{program} on {}", self.target());
        let out = run_process(cmd, input, "ssh", &what, self.timeout).await?;
        let stderr = lossy_capped(&out.stderr);
        // 255 is ssh's own failure: the command never ran.
        if out.status.code() == Some(255) {
            return Err(ExecError::Unreachable {
                target: self.target(),
                message: explain(&stderr),
            });
        }
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: lossy_capped(&out.stdout),
            stderr,
        })
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("ssh");
        cmd.args(self.ssh_options())
            .arg(&self.host)
            .arg("--")
            .arg(remote_command(program, args));
        cmd
    }

    /// rsync over the same options and control socket as every other command.
    async fn copy_dir(&self, from: &std::path::Path, to: &str) -> Result<(), ExecError> {
        // rsync splits -e at spaces and honours quotes: every word is quoted.
        let ssh = std::iter::once("ssh".to_string())
            .chain(self.ssh_options().iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = tokio::process::Command::new("rsync");
        cmd.arg("-a")
            .arg("--delete")
            .arg("-e")
            .arg(ssh)
            .arg(format!("{}/", from.display()))
            .arg(format!("{}:{}/", self.host, to.trim_end_matches('/')));
        let what = format!("copying {} to {to} on {}", from.display(), self.target());
        rsync(cmd, &what, self.timeout).await
    }
}

/// What an admin should do about an SSH failure.
fn explain(stderr: &str) -> String {
    let s = stderr.trim();
    if s.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || s.contains("Host key verification failed")
    {
        format!(
            "its host key is not the one pinned when the server was added: the host was \
             reinstalled, or something is between aegird and it. Not connecting. ({s})"
        )
    } else if s.contains("Permission denied") {
        format!(
            "aegird's key is not authorised there: add aegird's public key (shown by `aegir \
             server add`) to the user's ~/.ssh/authorized_keys. ({s})"
        )
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_commands_are_quoted_word_by_word() {
        assert_eq!(
            remote_command("sh", &["-c", "echo \"$1\"; rm -rf /", "sh", "it's"]),
            "env LC_ALL=C PATH=\"$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin\" 'sh' '-c' \
             'echo \"$1\"; rm -rf /' 'sh' 'it'\\''s'"
        );
    }

    #[test]
    fn explains_the_usual_failures() {
        assert!(explain("Host key verification failed.").contains("pinned"));
        assert!(explain("root@h: Permission denied (publickey).").contains("authorized_keys"));
        assert_eq!(
            explain("ssh: connect to host h port 22: No route to host"),
            "ssh: connect to host h port 22: No route to host"
        );
    }
}
