//! The VMM's configuration: everything `agl-vmm run` is told, as one plain value.
//!
//! It sits below every module that reads it (the VM builder in `vm`, restore in `snapshot`, the command
//! line in `cli`, which fills it in), so none of them has to import another to see it.

use std::path::PathBuf;

/// Everything `agl-vmm run` is told.
#[derive(Debug, Clone, Default)]
pub struct VmConfig {
    pub elf: Option<PathBuf>,
    pub mem_size: u64,
    pub root: Option<PathBuf>,
    pub env: Vec<String>,
    pub can: Vec<(String, vcan::Endpoint)>,
    pub args: Vec<String>,
    pub snapshot_at_bind: Option<PathBuf>,
    pub restore: Option<PathBuf>,
    pub trace_syscalls: bool,
}
