//! agl-vmm: a small KVM virtual machine monitor that runs one Linux x86-64 program (static, or
//! dynamically linked with its interpreter and libraries in the guest root) without a guest kernel.
//!
//! The VMM loads the program's ELF into guest memory, runs it at CPL3 in 64-bit long mode, traps every
//! `syscall` into a two-instruction CPL0 stub that exits to the VMM, and serves the Linux syscall ABI
//! itself (the gVisor/Hyperlight approach). This fits hosts whose KVM emulates guest CPL0 slowly (PVM) and
//! runs unchanged on hardware KVM. The guest gets SocketCAN (`AF_CAN`) bridged to a vcan bus, a read-only
//! root directory (files and directories), pipes, eventfds, timerfds, `poll`/`select`/`epoll` over all of
//! them, signals, fault reports, and snapshot/restore with copy-on-write memory. A dynamically linked
//! program (`PT_INTERP`) starts in its interpreter, loaded from the guest root as the kernel would, which
//! then maps the libraries from the root itself (Debian's `candump`, `cansend` and `busybox` run
//! unmodified).
//!
//! What it does not have: threads (`clone(CLONE_THREAD)` gives `EAGAIN` and one `threads unsupported in
//! vm` line on stderr) and other processes (`fork`/`vfork`/`clone` give `EAGAIN`, as under
//! `RLIMIT_NPROC`, with one line on stderr; `execve` is refused), so `sh -c 'a | b'` cannot fork; no
//! network besides CAN; no writable files.
//!
//! Modules, one per concern:
//! * [`memory`] — guest RAM, layout, page tables, GDT/IDT/TSS and CPL0 stubs;
//! * [`loader`] — ELF parsing (`PT_INTERP` too) and the initial stack (argv, envp, auxv);
//! * [`vcpu`] — KVM VM/vCPU setup, register state, the run call and its exits;
//! * [`mm`] — the guest address space (brk, mmap, munmap, mprotect) and pointer checks;
//! * [`guest`] — the guest process state and checked guest-memory access;
//! * [`syscalls`] — the syscall table and handlers;
//! * [`fdtable`], [`fs`], [`can`], [`vfiles`] — descriptors, the guest root, SocketCAN emulation, and the
//!   objects the VMM implements itself (pipes, eventfds, timerfds, epoll instances);
//! * [`signals`] — host signal forwarding, guest signal state and frames;
//! * [`faults`] — guest exception reports;
//! * [`snapshot`] — snapshot/restore;
//! * [`vm`] — building (program and interpreter) and running a guest;
//! * [`error`] — the VMM's own failures ([`VmmError`]);
//! * [`config`] — what a run is told ([`VmConfig`]);
//! * [`cli`] — the `agl-vmm` command line.
//!
//! No module imports one that imports it back: `cli` on top, then `vm`, `error`, `snapshot`, `syscalls`,
//! `guest` and the device and memory modules, with `config` and `errno` at the bottom.

pub mod can;
pub mod cli;
pub mod config;
pub mod errno;
pub mod error;
pub mod faults;
pub mod fdtable;
pub mod fs;
pub mod guest;
pub mod loader;
pub mod memory;
pub mod mm;
pub mod signals;
pub mod snapshot;
pub mod syscalls;
pub mod vcpu;
pub mod vfiles;
pub mod vm;

pub use config::VmConfig;
pub use error::VmmError;
pub use guest::GuestExit;
pub use vm::Vm;
