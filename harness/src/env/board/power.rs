//! Power control of a board from the bench: runs the inventory's `power_on`/`power_off` shell command on
//! this machine, bounded in time.

use std::process::ExitStatus;
use std::time::Duration;

use crate::ssh::last_lines;

/// Why a bench-side command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LocalCommandError {
    #[error("`{command}` did not finish within {} s", .limit.as_secs())]
    TimedOut { command: String, limit: Duration },
    #[error(transparent)]
    Spawn(#[from] std::io::Error),
    #[error("`{command}` exited with {status}: {stderr_tail}")]
    Failed {
        command: String,
        status: ExitStatus,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
}

/// Runs `command` with `sh -c` on the bench, within `limit`.
pub(super) async fn run_local(command: &str, limit: Duration) -> Result<(), LocalCommandError> {
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| LocalCommandError::TimedOut {
        command: command.to_string(),
        limit,
    })??;
    if out.status.success() {
        Ok(())
    } else {
        Err(LocalCommandError::Failed {
            command: command.to_string(),
            status: out.status,
            stderr_tail: last_lines(&String::from_utf8_lossy(&out.stderr), 3),
        })
    }
}
