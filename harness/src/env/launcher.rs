//! Host processes for every environment that starts one: the workload itself natively, the VMM for the
//! vm environment, `docker`-free helpers of the container and board environments. [`argv_for`] is the one
//! reading of a container's `command`/`args` against its image; [`HostLauncher`] starts a supervised
//! process with a clean environment, its own working directory and `PR_SET_PDEATHSIG`, and, when asked, with
//! SocketCAN emulated for it ([`super::socketcan`]) for as long as it runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::task::JoinHandle;

use super::socketcan::EmulationSpec;
use crate::error::InfraError;
use crate::logs::{self, LogSink};
use crate::manifest::ContainerSpec;
use crate::supervisor::{ExitInfo, Launcher, Process, StopSignal};

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The command line of a container: the image's binary unless `command` overrides it, which it may only
/// do by naming that binary (images hold nothing else).
pub fn argv_for(container: &ContainerSpec, binary: &Path) -> Result<Vec<String>, InfraError> {
    let mut argv = vec![binary.display().to_string()];
    if let Some((first, rest)) = container.command.split_first() {
        if basename(first) != container.image.binary_name() {
            return Err(InfraError::Launch {
                workload: container.name.clone(),
                reason: format!(
                    "command[0] `{first}` is not in image `{}`, which holds only the workload binary `{}`",
                    container.image,
                    container.image.binary_name()
                ),
            });
        }
        argv.extend(rest.iter().cloned());
    }
    argv.extend(container.args.iter().cloned());
    Ok(argv)
}

/// Starts a host process per incarnation (the workload itself natively, the VMM for the vm environment).
pub(crate) struct HostLauncher {
    pub(crate) name: String,
    /// The image's binary: a probe command naming it (`/hvac-controller --check-ready`) runs this file.
    pub(crate) binary: std::path::PathBuf,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: PathBuf,
    /// SocketCAN emulated for each incarnation.
    pub(crate) emulation: Option<EmulationSpec>,
}

impl HostLauncher {
    /// Spawns `command` (`what` names it in errors), with SocketCAN emulated when the launcher asks for it.
    fn spawn(
        &self,
        command: &mut tokio::process::Command,
        what: &str,
    ) -> Result<(tokio::process::Child, Option<vcan::emu::Emulation>), InfraError> {
        let channel = match &self.emulation {
            Some(spec) => Some(spec.prepare(command, &self.name)?),
            None => None,
        };
        let child = command.spawn().map_err(|e| InfraError::Launch {
            workload: self.name.clone(),
            reason: format!("{what}: {e}"),
        })?;
        let emulation = match channel {
            Some(channel) => Some(EmulationSpec::start(channel, &self.name)?),
            None => None,
        };
        Ok((child, emulation))
    }
}

#[async_trait]
impl Launcher for HostLauncher {
    async fn launch(&self, logs: &LogSink) -> Result<Box<dyn Process>, InfraError> {
        let (program, args) = self.argv.split_first().ok_or_else(|| InfraError::Launch {
            workload: self.name.clone(),
            reason: "empty command".into(),
        })?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (mut child, emulation) = self.spawn(&mut command, &format!("`{program}`"))?;
        let readers = [
            child.stdout.take().map(|out| logs.follow(out)),
            child.stderr.take().map(|err| logs.follow(err)),
        ];
        logs.note(&format!("started pid {}", child.id().unwrap_or(0)));
        Ok(Box::new(HostProcess {
            child,
            readers,
            _emulation: emulation,
        }))
    }

    async fn exec(&self, command: &[String]) -> Result<bool, InfraError> {
        let Some((first, args)) = command.split_first() else {
            return Ok(false);
        };
        let program = if basename(first) == basename(&self.binary.display().to_string()) {
            self.binary.display().to_string()
        } else {
            first.clone()
        };
        let mut probe = tokio::process::Command::new(&program);
        probe
            .args(args)
            .env_clear()
            .envs(self.env.iter().cloned())
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // A probe sees the container's CAN interfaces as its workload does.
        let what = format!("probe `{program}`");
        let (mut child, _emulation) = self.spawn(&mut probe, &what)?;
        let status = child.wait().await.map_err(|e| InfraError::Launch {
            workload: self.name.clone(),
            reason: format!("{what}: {e}"),
        })?;
        Ok(status.success())
    }
}

struct HostProcess {
    child: tokio::process::Child,
    readers: [Option<JoinHandle<()>>; 2],
    /// Serves the process's SocketCAN calls; stopped when the process is dropped.
    _emulation: Option<vcan::emu::Emulation>,
}

#[async_trait]
impl Process for HostProcess {
    async fn wait(&mut self) -> ExitInfo {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().await;
        logs::drain(&mut self.readers).await;
        match status {
            Ok(status) => ExitInfo {
                code: status.code(),
                signal: status.signal(),
            },
            Err(_) => ExitInfo {
                code: None,
                signal: None,
            },
        }
    }

    async fn signal(&mut self, signal: StopSignal) -> Result<(), InfraError> {
        let Some(pid) = self.child.id() else { return Ok(()) };
        let sig = match signal {
            StopSignal::Terminate => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        };
        kill(Pid::from_raw(pid as i32), sig).map_err(|e| InfraError::Signal {
            pid: pid as i32,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImageRef, Resources};

    fn container(command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: "hvac".into(),
            image: ImageRef {
                repository: "agl/hvac-controller".into(),
                tag: "1".into(),
            },
            command: command.iter().map(|s| s.to_string()).collect(),
            args: vec!["-v".into()],
            env: vec![],
            limits: Resources::default(),
            requests: Resources::default(),
            readiness: None,
            ..Default::default()
        }
    }

    #[test]
    fn command_may_only_name_the_image_binary() {
        let bin = Path::new("/build/hvac-controller");
        assert_eq!(
            argv_for(&container(&[]), bin).unwrap(),
            vec!["/build/hvac-controller", "-v"]
        );
        assert_eq!(
            argv_for(&container(&["/usr/bin/hvac-controller", "--x"]), bin).unwrap(),
            vec!["/build/hvac-controller", "--x", "-v"]
        );
        let err = argv_for(&container(&["/bin/sh", "-c", "x"]), bin)
            .unwrap_err()
            .to_string();
        assert!(err.contains("command[0] `/bin/sh` is not in image"), "{err}");
    }

    #[tokio::test]
    async fn the_last_lines_are_logged_before_the_exit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = HostLauncher {
            name: "w".into(),
            binary: "/bin/sh".into(),
            argv: [
                "/bin/sh",
                "-c",
                "for i in $(seq 1 200); do echo line $i; done; echo fatal >&2; exit 2",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![],
            workdir: dir.path().to_path_buf(),
            emulation: None,
        };
        for _ in 0..20 {
            let logs = LogSink::memory("w");
            let mut process = launcher.launch(&logs).await.unwrap();
            let exit = process.wait().await;
            assert_eq!(exit.code, Some(2));
            assert!(logs.find(0, "line 200").is_some(), "{}", logs.tail(3));
            assert!(logs.find(0, "fatal").is_some(), "{}", logs.tail(3));
        }
    }
}
