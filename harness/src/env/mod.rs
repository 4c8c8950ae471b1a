//! Environments: where a workload runs and how CAN reaches it, and the registry that knows them all.
//!
//! Every environment implements [`Environment`] ([`contract`]): deploy a pod from its manifest onto the
//! scenario's buses, and hand back one [`Instance`] per container that the step library can stop, kill,
//! restart, probe and read logs from. Restart policy and readiness are decided by the harness in the same way
//! for every environment ([`crate::supervisor`], [`crate::readiness`]), so the environments differ only in
//! how a process is started ([`crate::supervisor::Launcher`]) and how the bus endpoint is reached.
//!
//! Layout: [`contract`] (the trait and the types deployments exchange), [`socketcan`] (the CAN transport
//! choice and the SocketCAN emulation of started processes) and [`launcher`] (host processes,
//! `command`/`args`) at the bottom; one module per environment above them; this file, the [`registry`], on
//! top. Nothing outside this file names an environment.
//!
//! # Adding an environment
//! 1. Write `env/<name>.rs` (or `env/<name>/mod.rs` when it has several concerns) with a struct that
//!    implements [`Environment`] and a `pub fn kind() -> EnvKind`: its name (the column in reports), a
//!    summary, a `probe` that says whether this machine can host it and how to fix it when not, `columns`
//!    ([`contract::single_column`] unless a name stands for several columns), `create`, `sweep` (remove what a
//!    killed run of this environment left: containers, VMs, remote files; [`contract::sweep_nothing`] when
//!    [`crate::cleanup`]'s process sweep is enough) and `preflight` ([`contract::no_preflight`] unless
//!    `doctor --lab` has more to check).
//! 2. Import shared pieces from [`contract`], [`launcher`] and [`crate::error`], never from this file or a
//!    sibling environment.
//! 3. Add `pub mod <name>;` and one line in [`registry`] (its position is the column order).
//! 4. Say in `ARCHITECTURE.md` and the README's environment table how CAN reaches the workload there.
//!
//! The runner, `doctor`, `list` and the scenario suite then pick it up with no further change.

pub mod board;
pub mod container;
pub mod contract;
pub mod image_content;
pub mod kube;
pub mod launcher;
pub mod libraries;
pub mod native;
pub mod socketcan;
pub mod vm;
pub mod vxcan;

use std::sync::Arc;

pub use crate::error::InfraError;
pub use contract::{
    bus_env, bus_env_name, Check, ColumnError, DeployRequest, EnvKind, Environment, Instance, ProbeFailure,
    RunContext, Setup, Transport,
};

/// Every environment this build knows, in matrix order.
pub fn registry() -> Vec<EnvKind> {
    vec![
        native::kind(),
        container::kind(),
        vm::kind(),
        kube::kind(),
        board::kind(),
    ]
}

/// Finds an environment kind by the name used on the command line (`board:<name>` is the board kind).
pub fn find_kind(name: &str) -> Option<EnvKind> {
    let kind = name.split_once(':').map_or(name, |(k, _)| k);
    registry().into_iter().find(|k| k.name == kind)
}

/// The columns a name on the command line stands for, from the kind that owns the name.
pub fn columns(name: &str, setup: Setup<'_>) -> Result<Vec<String>, ColumnError> {
    let kind = find_kind(name).ok_or_else(|| ColumnError::Unknown(name.to_string()))?;
    (kind.columns)(name, setup)
}

/// Every name a column can be given here: each kind's name and the columns it stands for.
pub fn known_columns(setup: Setup<'_>) -> Vec<String> {
    let mut known: Vec<String> = Vec::new();
    for kind in registry() {
        let mut names = vec![kind.name.to_string()];
        names.extend((kind.columns)(kind.name, setup).unwrap_or_default());
        for name in names {
            if !known.contains(&name) {
                known.push(name);
            }
        }
    }
    known
}

/// Builds the environment of column `column` for a run.
pub fn create(column: &str, run: &RunContext, setup: Setup<'_>) -> Result<Arc<dyn Environment>, InfraError> {
    let kind = find_kind(column).ok_or_else(|| InfraError::Unavailable {
        env: column.to_string(),
        reason: "unknown environment".into(),
    })?;
    (kind.create)(column, run, setup)
}

/// Lets every environment remove what runs not in `live_runs` left behind; a line per removed item, with
/// the environment's name.
pub async fn sweep(live_runs: &[String], setup: Setup<'_>) -> Vec<(&'static str, String)> {
    let mut removed = Vec::new();
    for kind in registry() {
        for item in (kind.sweep)(live_runs.to_vec(), setup).await {
            removed.push((kind.name, item));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_board_columns_need_a_lab() {
        let needing: Vec<&str> = registry()
            .iter()
            .filter(|k| k.needs_lab())
            .map(|k| k.name)
            .collect();
        assert_eq!(needing, vec!["board"]);
    }

    #[test]
    fn bus_variables() {
        assert_eq!(bus_env_name("body-1"), "CAN_BUS_BODY_1");
        let env = bus_env(&[
            ("vehicle".into(), "unix:/a".into()),
            ("body".into(), "unix:/b".into()),
        ]);
        assert_eq!(
            env,
            vec![
                ("CAN_BUS".to_string(), "unix:/a".to_string()),
                ("CAN_BUS_VEHICLE".to_string(), "unix:/a".to_string()),
                ("CAN_BUS_BODY".to_string(), "unix:/b".to_string()),
            ]
        );
        assert!(bus_env(&[]).is_empty());
    }
}
