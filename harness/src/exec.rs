//! `agl-parity exec --can IF=ENDPOINT... -- PROGRAM ARGS...`: any program attached to buses with SocketCAN
//! emulated for it ([`vcan::emu`]), without root or kernel modules: `candump can0`, `cansend can0 123#11`,
//! a python-can script with `interface='socketcan'`, a team's own ECU binary.
//!
//! The program inherits the terminal; a Ctrl-C reaches it (the harness ignores it meanwhile), it dies with
//! the harness (`PR_SET_PDEATHSIG`: without its supervisor its CAN calls would fail), and the exit status is
//! the program's (128 + signal when a signal ended it).

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use vcan::emu::EmuError;
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
    let name = program
        .file_name()
        .map_or_else(|| "exec".to_string(), |n| n.to_string_lossy().into_owned());
    let mut command = std::process::Command::new(program);
    command.args(args);
    let (mut child, emulation) = vcan::emu::spawn(
        &mut command,
        vcan::emu::interfaces(interfaces),
        format!("{name}@exec"),
    )
    .map_err(|e| match e {
        EmuError::Spawn(source) => ExecError::Spawn {
            program: program.clone(),
            source,
        },
        e => ExecError::Emulation(e),
    })?;
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
