//! The VMM's own failures (as opposed to the guest failing), as one enum for the VM and the command line.
//!
//! It collects the error types of the layers below (memory, address space, ELF loader, KVM, snapshot,
//! guest root) and adds the few failures that only the VM loop or the command line can see. Modules
//! below `vm` return their own error types and never this one.

use crate::errno::Errno;
use crate::fs::RootError;
use crate::loader::ElfError;
use crate::memory::MemoryError;
use crate::mm::AddressSpaceError;
use crate::snapshot::SnapshotError;
use crate::vcpu::KvmError;

/// Everything that can make the VMM itself fail (as opposed to the guest failing).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    AddressSpace(#[from] AddressSpaceError),
    #[error("cannot load the guest program: {0}")]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    GuestRoot(#[from] RootError),
    #[error("installing signal handlers: {0}")]
    SignalHandlers(#[source] std::io::Error),
    /// A cold start without `--elf`.
    #[error("--elf is required (or --restore DIR)")]
    MissingElf,
    #[error("a CAN interface name is given twice in --can")]
    DuplicateCanName,
    /// The address space refused the pages of a loadable segment (after the image was checked to fit).
    #[error("internal error: mapping ELF pages {start:#x}..{end:#x}: {errno}")]
    MapElf { start: u64, end: u64, errno: Errno },
    #[error("internal error: mapping the stack: {0}")]
    MapStack(Errno),
    /// The revocation stub's port was written while no revocation was running.
    #[error("internal error: revocation stub exit outside a revocation")]
    StrayRevokeExit,
    /// A vCPU exit the VM loop has no meaning for (triple fault, `hlt` in a stub, a failed `KVM_RUN`...).
    #[error(
        "internal error: unexpected vCPU exit: {what} (rip={rip:#x} rsp={rsp:#x} cs={cs:#x} cr2={cr2:#x})"
    )]
    UnexpectedExit {
        what: String,
        rip: u64,
        rsp: u64,
        cs: u16,
        cr2: u64,
    },
}
