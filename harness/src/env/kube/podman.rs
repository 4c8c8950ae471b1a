//! The podman command line, as the kube environment runs it: one place that sets podman's configuration,
//! bounds every call and turns failures into errors with the end of podman's output.
//!
//! Podman is configured through `CONTAINERS_CONF`, never the system's files: unless the caller set
//! `CONTAINERS_CONF` already, every call gets the harness's own `containers.conf` (written under the state
//! root), whose only setting is `default_ulimits = []`. Sandboxes like this one refuse podman's default
//! rlimits (`error setting rlimit type 6/7: operation not permitted`); with no default ulimits a container
//! inherits podman's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The harness's `containers.conf`.
const CONTAINERS_CONF: &str = "# Written by agl-parity for the kube environment (podman kube play).\n\
# No default ulimits: sandboxes refuse podman's (error setting rlimit type 6/7).\n\
[containers]\ndefault_ulimits = []\n";

/// How long one podman call may take before it counts as hung (an image load or build may take longer).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a podman call did not give what was needed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PodmanError {
    #[error("cannot run `podman`: {0}; install it: `apt-get install -y podman catatonit`")]
    Spawn(String),
    #[error("`podman {command}` did not finish within {secs} s")]
    Timeout { command: String, secs: u64 },
    #[error("`podman {command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("cannot write podman's configuration {}: {reason}", .path.display())]
    Config { path: PathBuf, reason: String },
    #[error("`podman {command}` gave output that is not what podman {expected}: {reason}")]
    Output {
        command: String,
        expected: &'static str,
        reason: String,
    },
}

/// The podman command line with the harness's configuration.
#[derive(Debug, Clone)]
pub struct Podman {
    /// `CONTAINERS_CONF` for every call (`None`: the caller's own `CONTAINERS_CONF` is kept).
    conf: Option<PathBuf>,
}

impl Podman {
    /// Podman with the harness's `containers.conf` under `state_root`, unless `CONTAINERS_CONF` is set.
    pub fn new(state_root: &Path) -> Result<Podman, PodmanError> {
        Podman::configured(state_root, std::env::var_os("CONTAINERS_CONF").is_some())
    }

    /// Podman with the harness's configuration, or the caller's when `callers_own`.
    fn configured(state_root: &Path, callers_own: bool) -> Result<Podman, PodmanError> {
        if callers_own {
            return Ok(Podman { conf: None });
        }
        let dir = state_root.join("kube");
        let path = dir.join("containers.conf");
        let config_err = |e: std::io::Error| PodmanError::Config {
            path: path.clone(),
            reason: e.to_string(),
        };
        if std::fs::read_to_string(&path).ok().as_deref() != Some(CONTAINERS_CONF) {
            std::fs::create_dir_all(&dir).map_err(config_err)?;
            // Written beside and renamed, so a concurrent podman call never reads half a file.
            let partial = dir.join(format!("containers.conf.{}", std::process::id()));
            std::fs::write(&partial, CONTAINERS_CONF).map_err(config_err)?;
            std::fs::rename(&partial, &path).map_err(config_err)?;
        }
        Ok(Podman { conf: Some(path) })
    }

    /// The configuration file podman is given (for `doctor`).
    pub fn conf(&self) -> Option<&Path> {
        self.conf.as_deref()
    }

    /// A `podman` command with the configuration set; the caller adds arguments and runs it.
    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("podman");
        if let Some(conf) = &self.conf {
            command.env("CONTAINERS_CONF", conf);
        }
        command.stdin(std::process::Stdio::null()).kill_on_drop(true);
        command
    }

    /// Runs `podman ARGS` within `timeout`; its stdout, or an error with the end of its output.
    pub async fn run_within(&self, args: &[&str], timeout: Duration) -> Result<String, PodmanError> {
        let shown = args.join(" ");
        let output = tokio::time::timeout(timeout, self.command().args(args).output())
            .await
            .map_err(|_| PodmanError::Timeout {
                command: shown.clone(),
                secs: timeout.as_secs(),
            })?
            .map_err(|e| PodmanError::Spawn(e.to_string()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let output_text = last_lines(&String::from_utf8_lossy(&output.stderr), 12);
        let output_text = match known_fix(&output_text) {
            Some(fix) => format!("{output_text}\n(fix: {fix})"),
            None => output_text,
        };
        Err(PodmanError::Failed {
            command: shown,
            status: output.status.to_string(),
            output: output_text,
        })
    }

    /// [`Podman::run_within`] with the usual bound.
    pub async fn run(&self, args: &[&str]) -> Result<String, PodmanError> {
        self.run_within(args, CALL_TIMEOUT).await
    }

    /// Runs `podman ARGS` and reads its stdout as JSON of type `T`.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        args: &[&str],
        expected: &'static str,
    ) -> Result<T, PodmanError> {
        let out = self.run(args).await?;
        serde_json::from_str(&out).map_err(|e| PodmanError::Output {
            command: args.join(" "),
            expected,
            reason: e.to_string(),
        })
    }
}

/// The fix for podman failures this machine class is known for, from podman's own words.
fn known_fix(output: &str) -> Option<&'static str> {
    if output.contains("error setting rlimit") {
        Some(
            "this system refuses podman's default rlimits: give podman a containers.conf with \
             `[containers] default_ulimits = []` through CONTAINERS_CONF (the harness writes one under its \
             state root when CONTAINERS_CONF is unset)",
        )
    } else if output.contains("finding pause binary") || output.contains("catatonit") {
        Some("podman's pause image needs catatonit: `apt-get install -y catatonit`")
    } else {
        None
    }
}

/// The last `n` lines of a tool's output, without podman's syslog chatter.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("failed to connect to syslog"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_written_once_and_only_sets_the_ulimits() {
        let dir = tempfile::tempdir().unwrap();
        let podman = Podman::configured(dir.path(), false).unwrap();
        let conf = podman.conf().unwrap().to_path_buf();
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("[containers]\ndefault_ulimits = []"));
        let again = Podman::configured(dir.path(), false).unwrap();
        assert_eq!(again.conf(), Some(conf.as_path()));
        assert_eq!(Podman::configured(dir.path(), true).unwrap().conf(), None);
    }

    #[test]
    fn the_sandbox_traps_get_their_fix() {
        let rlimit =
            "Error: crun: error setting rlimit type 7: Operation not permitted: OCI permission denied";
        assert!(known_fix(rlimit).is_some_and(|f| f.contains("default_ulimits = []")));
        let pause = "Error: building local pause image: finding pause binary: exec: \"catatonit\": not found";
        assert!(known_fix(pause).is_some_and(|f| f.contains("apt-get install -y catatonit")));
        assert_eq!(known_fix("Error: no such pod"), None);
    }

    #[test]
    fn failures_keep_the_end_of_the_output_without_syslog_noise() {
        let text = "failed to connect to syslog: Initialization\nError: no such pod\n";
        assert_eq!(last_lines(text, 12), "Error: no such pod");
    }
}
