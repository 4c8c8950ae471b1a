//! `agl-parity exec --can IF=ENDPOINT... -- PROGRAM ARGS...`: any program attached to buses with SocketCAN
//! emulated for it ([`vcan::emu`]), without root or kernel modules: `candump can0`, `cansend can0 123#11`,
//! a python-can script with `interface='socketcan'`, a team's own ECU binary.
//!
//! The program inherits the terminal; a Ctrl-C reaches it (the harness ignores it meanwhile), it dies with
//! the harness (`PR_SET_PDEATHSIG`: without its supervisor its CAN calls would fail), and the exit status is
//! the program's (128 + signal when a signal ended it).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;

use vcan::emu::{ChildChannel, EmuError, Emulation};
use vcan::Endpoint;

/// Why `exec` could not run the program.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(
        "--can `{0}`: expected IF=ENDPOINT, e.g. can0=unix:/run/vcan/body.sock or can0=tcp:127.0.0.1:29536"
    )]
    BadInterface(String),
    #[error("--can `{given}`: {reason}")]
    BadEndpoint { given: String, reason: String },
    #[error("interface `{0}` is given twice")]
    Duplicate(String),
    #[error("give at least one --can IF=ENDPOINT")]
    NoInterface,
    #[error("{0}")]
    Emulation(#[from] EmuError),
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
}

/// Reads `--can` values (each `IF=ENDPOINT`, or several separated by commas).
pub fn parse_interfaces(values: &[String]) -> Result<Vec<(String, Endpoint)>, ExecError> {
    let mut out: Vec<(String, Endpoint)> = Vec::new();
    for value in values.iter().flat_map(|v| v.split(',')).filter(|v| !v.is_empty()) {
        let (name, uri) = value
            .split_once('=')
            .filter(|(n, u)| !n.is_empty() && !u.is_empty())
            .ok_or_else(|| ExecError::BadInterface(value.to_string()))?;
        let endpoint: Endpoint = uri.parse().map_err(|e: vcan::BusError| ExecError::BadEndpoint {
            given: value.to_string(),
            reason: e.to_string(),
        })?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(ExecError::Duplicate(name.to_string()));
        }
        out.push((name.to_string(), endpoint));
    }
    if out.is_empty() {
        return Err(ExecError::NoInterface);
    }
    Ok(out)
}

/// Runs `program args` with `interfaces` emulated; returns its exit code.
pub fn exec(
    interfaces: Vec<(String, Endpoint)>,
    program: &PathBuf,
    args: &[String],
) -> Result<i32, ExecError> {
    vcan::emu::available()?;
    let channel = ChildChannel::new()?;
    let mut command = std::process::Command::new(program);
    command.args(args);
    // SAFETY: prctl and the hook only make system calls (prctl, seccomp, sendmmsg, close).
    unsafe {
        // Without its supervisor the program's CAN calls would fail: it ends with `exec`.
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
        command.pre_exec(channel.hook());
    }
    let mut child = command.spawn().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;
    let name = program
        .file_name()
        .map_or_else(|| "exec".to_string(), |n| n.to_string_lossy().into_owned());
    let emulation = match channel
        .listener()
        .and_then(|l| Emulation::start(l, vcan::emu::interfaces(interfaces), format!("{name}@exec")))
    {
        Ok(e) => e,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
    };
    // The terminal's Ctrl-C is the program's to handle.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stats = emulation.wait();
    tracing::debug!(?stats, "SocketCAN emulation ended");
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_read_with_clear_errors() {
        let got = parse_interfaces(&["can0=unix:/a.sock,vcan1=tcp:127.0.0.1:5".into()]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, "vcan1");
        for (bad, want) in [
            ("can0", "expected IF=ENDPOINT"),
            ("=unix:/a", "expected IF=ENDPOINT"),
            ("can0=ftp:x", "can0=ftp:x"),
        ] {
            let e = parse_interfaces(&[bad.to_string()]).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let e = parse_interfaces(&["can0=unix:/a".into(), "can0=unix:/b".into()]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        assert!(matches!(parse_interfaces(&[]), Err(ExecError::NoInterface)));
    }
}
