//! The system OpenSSH client (`ssh`, `scp`) driven for one board of a lab.
//!
//! Every call is non-interactive and bounded: `BatchMode=yes` (never a password prompt), only the inventory's
//! key (`IdentitiesOnly=yes`, no agent), `StrictHostKeyChecking=accept-new` against a known-hosts file of the
//! run (a board re-imaged between runs is accepted, a host key that changes during a run is refused),
//! `ConnectTimeout` from the inventory, keep-alives so a dead link ends the session, and an outer deadline on
//! every command. `-F /dev/null` keeps the user's own ssh configuration out, so a run behaves the same on
//! every bench; extra options come from the inventory (`ssh.options`).
//!
//! Failures are classified into [`SshError`] variants that name the board and the cause (unreachable, key
//! refused, host key changed, timed out), with the key path redacted from ssh's own messages. Local `ssh`
//! processes carry the run marker and die with the harness, so a killed run leaves no client behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::lab::{Board, Redactor, SshTarget, REDACTED};

/// Why an ssh operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error("board `{board}` is unreachable ({target}): {detail}")]
    Unreachable {
        board: String,
        target: String,
        detail: String,
    },
    #[error("board `{board}` refused the ssh key for {target}: {detail}")]
    AuthRefused {
        board: String,
        target: String,
        detail: String,
    },
    #[error(
        "board `{board}`: the host key of {target} does not match the one seen earlier in this run: {detail}"
    )]
    HostKey {
        board: String,
        target: String,
        detail: String,
    },
    #[error(
        "board `{board}`: the ssh key file ({}) does not exist or cannot be read",
        REDACTED
    )]
    KeyMissing { board: String },
    #[error("board `{board}`: {what} did not finish within {secs} s")]
    TimedOut { board: String, what: String, secs: u64 },
    #[error("board `{board}`: {what} failed: {detail}")]
    Failed {
        board: String,
        what: String,
        detail: String,
    },
}

/// What a remote command returned.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The ssh/scp client for one board.
#[derive(Debug, Clone)]
pub struct Ssh {
    board: String,
    target: SshTarget,
    known_hosts: PathBuf,
    marker: Option<String>,
    redactor: Redactor,
}

impl Ssh {
    /// A client for `board`, remembering host keys in `known_hosts`; `marker` is the run id the local ssh
    /// processes carry (`AGL_PARITY_RUN`).
    pub fn new(board: &Board, known_hosts: &Path, marker: Option<&str>) -> Ssh {
        Ssh {
            board: board.name.clone(),
            target: board.ssh.clone(),
            known_hosts: known_hosts.to_path_buf(),
            marker: marker.map(str::to_string),
            redactor: board.redactor(),
        }
    }

    pub fn board(&self) -> &str {
        &self.board
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// `user@host:port`.
    pub fn target(&self) -> String {
        self.target.display()
    }

    /// Whether the key file can be read (a missing key is not worth a connection attempt).
    pub fn key_readable(&self) -> bool {
        std::fs::File::open(&self.target.key).is_ok()
    }

    fn options(&self) -> Vec<String> {
        let quote = |p: &Path| format!("\"{}\"", p.display().to_string().replace('%', "%%"));
        let mut o = vec![
            "-F".to_string(),
            "/dev/null".to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", quote(&self.known_hosts)),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "IdentityAgent=none".into(),
            "-o".into(),
            format!("IdentityFile={}", quote(&self.target.key)),
            "-o".into(),
            "PasswordAuthentication=no".into(),
            "-o".into(),
            "KbdInteractiveAuthentication=no".into(),
            "-o".into(),
            format!("ConnectTimeout={}", self.target.connect_timeout.as_secs().max(1)),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        for extra in &self.target.options {
            o.push("-o".into());
            o.push(extra.clone());
        }
        o
    }

    fn destination(&self) -> String {
        format!("{}@{}", self.target.user, self.target.host)
    }

    fn prepare(&self, command: &mut tokio::process::Command) {
        command.kill_on_drop(true);
        if let Some(run) = &self.marker {
            command.env(crate::cleanup::RUN_MARKER_ENV, run);
        }
        // SAFETY: only prctl(2), async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// `ssh … sh -c <script>`; stdin, stdout and stderr are piped.
    pub fn command(&self, script: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ssh");
        c.args(self.options())
            .arg("-p")
            .arg(self.target.port.to_string())
            .arg(self.destination())
            .arg("--")
            .arg(format!("sh -c {}", sh_quote(script)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.prepare(&mut c);
        c
    }

    /// Runs `script` on the board (with `input` on its stdin) and returns whatever it exits with; ssh's own
    /// failures (connection, authentication, deadline) are errors.
    pub async fn run(
        &self,
        what: &str,
        script: &str,
        input: Option<&[u8]>,
        limit: Duration,
    ) -> Result<RemoteOutput, SshError> {
        if !self.key_readable() {
            return Err(SshError::KeyMissing {
                board: self.board.clone(),
            });
        }
        tracing::debug!(board = %self.board, what, "ssh");
        let mut child = self
            .command(script)
            .spawn()
            .map_err(|e| self.failed(what, &format!("cannot run ssh: {e}")))?;
        let mut stdin = child.stdin.take();
        let input = input.map(<[u8]>::to_vec);
        let io = async move {
            if let (Some(s), Some(bytes)) = (stdin.as_mut(), input) {
                let _ = s.write_all(&bytes).await;
            }
            drop(stdin);
            child.wait_with_output().await
        };
        let output = tokio::time::timeout(limit, io)
            .await
            .map_err(|_| SshError::TimedOut {
                board: self.board.clone(),
                what: what.to_string(),
                secs: limit.as_secs(),
            })?
            .map_err(|e| self.failed(what, &e.to_string()))?;
        let status = output.status.code().unwrap_or(-1);
        let stderr = self.redactor.apply(&String::from_utf8_lossy(&output.stderr));
        if status == 255 {
            if let Some(e) = self.classify(what, &stderr) {
                return Err(e);
            }
        }
        Ok(RemoteOutput {
            status,
            stdout: String::from_utf8_lossy(&output.stdout).to_string(),
            stderr,
        })
    }

    /// Like [`Self::run`], but a non-zero exit is an error quoting stderr.
    pub async fn check(&self, what: &str, script: &str, limit: Duration) -> Result<String, SshError> {
        let out = self.run(what, script, None, limit).await?;
        if out.status != 0 {
            return Err(self.failed(
                what,
                &format!("exit code {}: {}", out.status, last_lines(&out.stderr, 4)),
            ));
        }
        Ok(out.stdout)
    }

    /// Copies a local file to `remote` on the board with scp.
    pub async fn copy(&self, local: &Path, remote: &str, limit: Duration) -> Result<(), SshError> {
        if !self.key_readable() {
            return Err(SshError::KeyMissing {
                board: self.board.clone(),
            });
        }
        let what = format!("copying {} to the board", file_name(local));
        let host = if self.target.host.contains(':') {
            format!("[{}]", self.target.host)
        } else {
            self.target.host.clone()
        };
        let mut c = tokio::process::Command::new("scp");
        c.arg("-q")
            .args(self.options())
            .arg("-P")
            .arg(self.target.port.to_string())
            .arg(local)
            .arg(format!("{}@{host}:{remote}", self.target.user))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.prepare(&mut c);
        let child = c
            .spawn()
            .map_err(|e| self.failed(&what, &format!("cannot run scp: {e}")))?;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| SshError::TimedOut {
                board: self.board.clone(),
                what: what.clone(),
                secs: limit.as_secs(),
            })?
            .map_err(|e| self.failed(&what, &e.to_string()))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = self.redactor.apply(&String::from_utf8_lossy(&output.stderr));
        Err(self
            .classify(&what, &stderr)
            .unwrap_or_else(|| self.failed(&what, &last_lines(&stderr, 4))))
    }

    fn failed(&self, what: &str, detail: &str) -> SshError {
        SshError::Failed {
            board: self.board.clone(),
            what: what.to_string(),
            detail: self.redactor.apply(detail),
        }
    }

    /// Turns ssh's complaint into an error naming the cause; `None` when stderr is not ssh's.
    pub fn classify(&self, what: &str, stderr: &str) -> Option<SshError> {
        let detail = last_lines(stderr, 2);
        let board = self.board.clone();
        let target = self.target();
        let has = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
        if has(&[
            "Connection refused",
            "Connection timed out",
            "No route to host",
            "Network is unreachable",
            "Could not resolve hostname",
            "Connection closed by",
            "Connection reset",
            "connect to host",
            "kex_exchange_identification",
        ]) {
            Some(SshError::Unreachable {
                board,
                target,
                detail,
            })
        } else if has(&["Permission denied", "Too many authentication failures"]) {
            Some(SshError::AuthRefused {
                board,
                target,
                detail,
            })
        } else if has(&[
            "Host key verification failed",
            "REMOTE HOST IDENTIFICATION HAS CHANGED",
        ]) {
            Some(SshError::HostKey {
                board,
                target,
                detail,
            })
        } else if has(&["Load key", "no such identity", "Identity file", "invalid format"]) {
            Some(SshError::KeyMissing { board })
        } else if stderr.trim().starts_with("ssh:") || stderr.contains("ssh_") {
            Some(self.failed(what, &detail))
        } else {
            None
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The last `n` non-empty lines of `text`, joined with ` / `.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// Quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '@' | ',' | '+')
        })
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Lab;

    fn ssh() -> Ssh {
        let lab = Lab::parse(
            "boards:\n  - name: b1\n    arch: x86_64\n    ssh: { host: 10.0.0.2, key: /keys/lab.key }\n",
            Path::new("/l/lab.yaml"),
        )
        .unwrap();
        Ssh::new(&lab.boards[0], Path::new("/tmp/kh"), Some("run-1"))
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(sh_quote("can0"), "can0");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote("x'y $HOME \"z\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x'y $HOME \"z\"");
    }

    #[test]
    fn ssh_failures_are_classified_naming_the_board() {
        let s = ssh();
        let e = s
            .classify("x", "ssh: connect to host 10.0.0.2 port 22: Connection refused\n")
            .unwrap();
        assert!(matches!(e, SshError::Unreachable { .. }));
        assert!(
            e.to_string()
                .starts_with("board `b1` is unreachable (root@10.0.0.2:22)"),
            "{e}"
        );
        let e = s
            .classify("x", "root@10.0.0.2: Permission denied (publickey).\n")
            .unwrap();
        assert!(e.to_string().contains("refused the ssh key"), "{e}");
        assert!(s.classify("x", "cat: nope: No such file\n").is_none());
    }

    #[test]
    fn options_are_hermetic_and_bounded() {
        let o = ssh().options().join(" ");
        for needle in [
            "-F /dev/null",
            "BatchMode=yes",
            "StrictHostKeyChecking=accept-new",
            "UserKnownHostsFile=\"/tmp/kh\"",
            "IdentitiesOnly=yes",
            "ConnectTimeout=5",
        ] {
            assert!(o.contains(needle), "{needle} in {o}");
        }
    }
}
