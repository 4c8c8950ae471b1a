//! Snapshot and restore (persist).
//!
//! A snapshot directory holds two files:
//! * `memory.bin`: a 4 KiB header (magic `AGLVMMEM`, format version, memory size) followed by guest RAM,
//!   written sparsely (all-zero pages are holes). Restore maps it `MAP_PRIVATE` from offset 4096: pages are
//!   read on first access and guest writes go to private copies; nothing is copied up front, and one
//!   snapshot can be restored any number of times concurrently (the file must not change meanwhile).
//! * `state.json`: magic, version, sizes, the vCPU state (general and special registers, XSAVE area, XCR0,
//!   MSRs including FS/GS base, STAR/LSTAR/SFMASK) and the syscall-layer state: address-space bookkeeping
//!   (regions, brk), descriptor table (files by guest path and offset; CAN sockets with all options and
//!   filters; stdio), signal actions/mask/pending/alternate stack, the guest's monotonic clock value,
//!   process identity, and whether the vCPU is stopped inside a syscall (a snapshot taken before `bind`:
//!   the restored VMM serves that `bind` first, joining the buses given on its own command line).
//!
//! Both files are validated on restore (magic, version, sizes, file length, interface names) with errors
//! that say what is wrong.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::can::{CanOptions, GuestCanSocket, Interfaces};
use crate::config::VmConfig;
use crate::fdtable::{Description, FdTable, Object, OpenFile};
use crate::fs::{FileKind, GuestRoot, RootError};
use crate::guest::{host_clock_ns, Guest, GuestClock, ProcInfo};
use crate::memory::{GuestRam, Layout, MemoryError, PAGE_SIZE};
use crate::mm::AddressSpace;
use crate::signals::{HostSignals, SignalState};
use crate::vcpu::{CpuState, ExtendedState};

pub const STATE_MAGIC: &str = "agl-vmm-snapshot";
pub const VERSION: u32 = 1;
pub const MEM_MAGIC: &[u8; 8] = b"AGLVMMEM";
/// Bytes before guest RAM in `memory.bin`.
pub const MEM_HEADER: u64 = 4096;
pub const MEMORY_FILE: &str = "memory.bin";
pub const STATE_FILE: &str = "state.json";
/// Largest `state.json` accepted.
const STATE_MAX: u64 = 16 << 20;

/// Snapshot errors.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("snapshot {path}: {reason}")]
    Invalid { path: String, reason: String },
    /// Restore: guest memory cannot be mapped from the memory file.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Restore: the guest root cannot be opened.
    #[error(transparent)]
    Root(#[from] RootError),
    /// Save: the guest holds a descriptor a snapshot cannot capture (nothing was written).
    #[error("cannot snapshot the guest: its fd {fd} is a {what}, which snapshots do not capture (pipes, eventfds, timerfds and epoll instances created before the first CAN bind); run without snapshots")]
    Unsupported { fd: i32, what: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// One open object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ObjectState {
    Stdio(i32),
    File {
        path: String,
        kind: FileKind,
        offset: u64,
    },
    Can {
        node: String,
        opts: CanOptions,
        bound: Option<u32>,
        rcvtimeo_us: u64,
    },
    IoctlSocket {
        domain: i32,
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DescriptionState {
    pub object: ObjectState,
    pub nonblock: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FdState {
    pub fd: i32,
    /// Index into `descriptions` (dups share one).
    pub description: usize,
    pub cloexec: bool,
}

/// `state.json`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct State {
    pub magic: String,
    pub version: u32,
    pub mem_size: u64,
    pub layout: Layout,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub ext: ExtendedState,
    pub in_syscall: bool,
    pub mm: AddressSpace,
    pub descriptions: Vec<DescriptionState>,
    pub fds: Vec<FdState>,
    pub signals: SignalState,
    pub fpu_frames: Vec<(u64, ExtendedState)>,
    /// The guest's CLOCK_MONOTONIC at the snapshot.
    pub guest_monotonic_ns: i64,
    pub info: ProcInfo,
    pub cwd: String,
    pub root: Option<PathBuf>,
    /// CAN interface names in ifindex order.
    pub interfaces: Vec<String>,
}

/// Writes the snapshot of a guest stopped in a syscall into `dir`.
pub fn save(dir: &Path, guest: &Guest, cpu: &CpuState, ext: &ExtendedState) -> Result<(), SnapshotError> {
    // Refuse before anything is written: an empty directory means "no snapshot".
    for (fd, desc, _) in guest.fds.entries() {
        if let Some(what) = desc.borrow().object.anon_name() {
            return Err(SnapshotError::Unsupported { fd, what });
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mem_path = dir.join(MEMORY_FILE);
    write_memory(&mem_path, &guest.ram)?;

    let mut descriptions: Vec<DescriptionState> = Vec::new();
    let mut seen: Vec<*const RefCell<Description>> = Vec::new();
    let mut fds = Vec::new();
    for (fd, desc, cloexec) in guest.fds.entries() {
        let ptr = Rc::as_ptr(desc);
        let index = match seen.iter().position(|p| *p == ptr) {
            Some(i) => i,
            None => {
                let d = desc.borrow();
                let object = match &d.object {
                    Object::Stdio(n) => ObjectState::Stdio(*n),
                    Object::File(f) => ObjectState::File {
                        path: f.path.clone(),
                        kind: f.kind,
                        offset: f.offset,
                    },
                    Object::Can(s) => ObjectState::Can {
                        node: s.node_name.clone(),
                        opts: s.opts.clone(),
                        bound: s.bound,
                        rcvtimeo_us: s.rcvtimeo_us,
                    },
                    Object::IoctlSocket { domain } => ObjectState::IoctlSocket { domain: *domain },
                    Object::Pipe(_) | Object::EventFd(_) | Object::TimerFd(_) | Object::Epoll(_) => {
                        let what = d.object.anon_name().unwrap_or("descriptor");
                        return Err(SnapshotError::Unsupported { fd, what });
                    }
                };
                descriptions.push(DescriptionState {
                    object,
                    nonblock: d.nonblock,
                });
                seen.push(ptr);
                descriptions.len() - 1
            }
        };
        fds.push(FdState {
            fd,
            description: index,
            cloexec,
        });
    }
    let interfaces = (1..=guest.ifaces.len() as u32)
        .filter_map(|i| guest.ifaces.name_of(i).map(str::to_string))
        .collect();
    let mono = guest.clock.now_ns(libc::CLOCK_MONOTONIC).unwrap_or(0);
    let state = State {
        magic: STATE_MAGIC.into(),
        version: VERSION,
        mem_size: guest.ram.size(),
        layout: guest.mm.layout,
        regs: cpu.regs,
        sregs: cpu.sregs,
        ext: ext.clone(),
        in_syscall: !cpu.in_user_mode(),
        mm: guest.mm.clone(),
        descriptions,
        fds,
        signals: guest.signals.clone(),
        fpu_frames: guest.fpu_frames.clone(),
        guest_monotonic_ns: i64::try_from(mono).unwrap_or(i64::MAX),
        info: guest.info.clone(),
        cwd: guest.root.cwd.clone(),
        root: guest.root.host_path().map(Path::to_path_buf),
        interfaces,
    };
    let json = serde_json::to_vec(&state).map_err(|e| invalid(dir, format!("cannot encode state: {e}")))?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&json).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    let state_path = dir.join(STATE_FILE);
    std::fs::rename(&tmp, &state_path).map_err(io(&state_path))?;
    Ok(())
}

fn mem_header(size: u64) -> Vec<u8> {
    let mut h = vec![0u8; MEM_HEADER as usize];
    h[0..8].copy_from_slice(MEM_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&size.to_le_bytes());
    h
}

/// Writes guest RAM sparsely: zero pages become holes.
fn write_memory(path: &Path, ram: &GuestRam) -> Result<(), SnapshotError> {
    let f = File::create(path).map_err(io(path))?;
    f.set_len(MEM_HEADER + ram.size()).map_err(io(path))?;
    f.write_all_at(&mem_header(ram.size()), 0).map_err(io(path))?;
    const CHUNK: u64 = 1 << 20;
    let mut at = 0u64;
    while at < ram.size() {
        let len = CHUNK.min(ram.size() - at);
        let result = ram
            .with_slice(at, len, |chunk| -> std::io::Result<()> {
                let mut run: Option<usize> = None;
                let pages = chunk.len() / PAGE_SIZE as usize;
                for p in 0..=pages {
                    let nonzero = p < pages && chunk[p * 4096..(p + 1) * 4096].iter().any(|&b| b != 0);
                    match (nonzero, run) {
                        (true, None) => run = Some(p),
                        (false, Some(start)) => {
                            f.write_all_at(
                                &chunk[start * 4096..p * 4096],
                                MEM_HEADER + at + start as u64 * 4096,
                            )?;
                            run = None;
                        }
                        _ => {}
                    }
                }
                Ok(())
            })
            .map_err(|e| invalid(path, e.to_string()))?;
        result.map_err(io(path))?;
        at += len;
    }
    f.sync_all().map_err(io(path))?;
    Ok(())
}

/// What a restore produces for the VM.
pub struct Restored {
    pub guest: Guest,
    pub cpu: CpuState,
    pub ext: ExtendedState,
    pub pending_syscall: bool,
}

/// Reads and validates `state.json`.
pub fn read_state(dir: &Path) -> Result<State, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let f = File::open(&path).map_err(io(&path))?;
    let len = f.metadata().map_err(io(&path))?.len();
    if len > STATE_MAX {
        return Err(invalid(
            &path,
            format!("{len} bytes is larger than the {STATE_MAX}-byte limit"),
        ));
    }
    let mut text = Vec::with_capacity(len as usize);
    f.take(STATE_MAX).read_to_end(&mut text).map_err(io(&path))?;
    // The common case parses straight into the state; only a failure pays for a second, diagnostic parse.
    let state: State = match serde_json::from_slice(&text) {
        Ok(state) => state,
        Err(e) => {
            let probe: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| invalid(&path, format!("not valid JSON: {e}")))?;
            if probe.get("magic").and_then(|m| m.as_str()) != Some(STATE_MAGIC) {
                return Err(invalid(
                    &path,
                    format!("not an agl-vmm snapshot (magic is not `{STATE_MAGIC}`)"),
                ));
            }
            let version = probe.get("version").and_then(|v| v.as_u64());
            if version != Some(u64::from(VERSION)) {
                return Err(invalid(
                    &path,
                    format!(
                        "snapshot format version {version:?} is not supported (this agl-vmm reads version {VERSION})"
                    ),
                ));
            }
            return Err(invalid(&path, format!("bad state: {e}")));
        }
    };
    if state.magic != STATE_MAGIC {
        return Err(invalid(
            &path,
            format!("not an agl-vmm snapshot (magic is not `{STATE_MAGIC}`)"),
        ));
    }
    if state.version != VERSION {
        return Err(invalid(
            &path,
            format!(
                "snapshot format version {} is not supported (this agl-vmm reads version {VERSION})",
                state.version
            ),
        ));
    }
    let expect = Layout::new(state.mem_size).map_err(|e| invalid(&path, e.to_string()))?;
    if expect != state.layout || state.mm.layout != state.layout {
        return Err(invalid(&path, "memory layout does not match the memory size"));
    }
    if state.descriptions.len() > crate::fdtable::MAX_FDS as usize
        || state.fds.iter().any(|f| {
            f.description >= state.descriptions.len() || !(0..crate::fdtable::MAX_FDS).contains(&f.fd)
        })
    {
        return Err(invalid(&path, "descriptor table is inconsistent"));
    }
    Ok(state)
}

/// Opens and validates `memory.bin` for a guest of `size` bytes.
pub fn open_memory(dir: &Path, size: u64) -> Result<File, SnapshotError> {
    let path = dir.join(MEMORY_FILE);
    let f = File::open(&path).map_err(io(&path))?;
    let mut h = [0u8; 24];
    f.read_exact_at(&mut h, 0)
        .map_err(|_| invalid(&path, "too short for the header"))?;
    if &h[0..8] != MEM_MAGIC {
        return Err(invalid(&path, "not an agl-vmm memory file (bad magic)"));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(invalid(
            &path,
            format!("memory file version {version} is not {VERSION}"),
        ));
    }
    let mem = u64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8]));
    if mem != size {
        return Err(invalid(
            &path,
            format!("memory size {mem} does not match the state's {size}"),
        ));
    }
    let len = f.metadata().map_err(io(&path))?.len();
    if len != MEM_HEADER + size {
        return Err(invalid(
            &path,
            format!(
                "file is {len} bytes, expected {} (header + guest memory)",
                MEM_HEADER + size
            ),
        ));
    }
    Ok(f)
}

/// Builds the guest of a snapshot. CAN interfaces come from `config.can` (same names, same order as at
/// the snapshot); memory is a private mapping of `memory.bin`.
pub fn load(dir: &Path, config: &VmConfig, host_signals: Rc<HostSignals>) -> Result<Restored, SnapshotError> {
    let t0 = std::time::Instant::now();
    let state = read_state(dir)?;
    let t_state = t0.elapsed();
    let mem_file = open_memory(dir, state.mem_size)?;
    let ram = GuestRam::file_private(mem_file, MEM_HEADER, state.mem_size)?;
    tracing::debug!(state_us = t_state.as_micros() as u64, "snapshot state read");

    let given: Vec<&str> = config.can.iter().map(|(n, _)| n.as_str()).collect();
    for (i, name) in state.interfaces.iter().enumerate() {
        if given.get(i) != Some(&name.as_str()) {
            return Err(invalid(
                dir,
                format!(
                    "the snapshot's guest uses CAN interface `{name}` as ifindex {}; give `--can {name}=ENDPOINT` (interfaces in the same order: {})",
                    i + 1,
                    state.interfaces.join(", ")
                ),
            ));
        }
    }
    let root_path = config.root.clone().or_else(|| state.root.clone());
    let mut root = GuestRoot::open(root_path.as_deref())?;
    root.cwd = state.cwd.clone();
    let ifaces = Interfaces::new(config.can.clone());

    let mut descs: Vec<Rc<RefCell<Description>>> = Vec::with_capacity(state.descriptions.len());
    for d in &state.descriptions {
        let object = match &d.object {
            ObjectState::Stdio(n) => Object::Stdio(*n),
            ObjectState::File { path, kind, offset } => {
                let flags = if *kind == FileKind::Directory {
                    libc::O_DIRECTORY
                } else {
                    0
                };
                let (file, k) = root.open_path(path, flags).map_err(|e| {
                    invalid(
                        dir,
                        format!(
                            "the guest had `{path}` open but it cannot be opened in the guest root now: {e}"
                        ),
                    )
                })?;
                if k == FileKind::Directory && *offset > 0 {
                    // The directory stream's position (getdents64 reads from the host's).
                    // SAFETY: lseek on a directory fd just opened; no memory is involved.
                    unsafe {
                        libc::lseek(
                            std::os::fd::AsRawFd::as_raw_fd(&file),
                            *offset as i64,
                            libc::SEEK_SET,
                        )
                    };
                }
                Object::File(OpenFile {
                    file,
                    kind: k,
                    path: path.clone(),
                    offset: *offset,
                })
            }
            ObjectState::Can {
                node,
                opts,
                bound,
                rcvtimeo_us,
            } => {
                let mut s = GuestCanSocket::restored(node.clone(), opts.clone(), *bound);
                s.rcvtimeo_us = *rcvtimeo_us;
                if s.bound.is_some() {
                    s.reconnect(&ifaces).map_err(|e| {
                        invalid(dir, format!("cannot rejoin the CAN bus of a bound socket: {e}"))
                    })?;
                }
                Object::Can(Box::new(s))
            }
            ObjectState::IoctlSocket { domain } => Object::IoctlSocket { domain: *domain },
        };
        descs.push(Rc::new(RefCell::new(Description {
            object,
            nonblock: d.nonblock,
        })));
    }
    let mut fds = FdTable::default();
    for f in &state.fds {
        fds.install(f.fd, Rc::clone(&descs[f.description]), f.cloexec);
    }
    let mut info = state.info.clone();
    // SAFETY: getpid has no preconditions.
    info.pid = unsafe { libc::getpid() } as u32;
    let clock = GuestClock {
        mono_offset_ns: i64::try_from(
            i128::from(state.guest_monotonic_ns) - host_clock_ns(libc::CLOCK_MONOTONIC),
        )
        .unwrap_or(0),
    };
    let guest = Guest {
        ram,
        mm: state.mm.clone(),
        fds,
        root,
        ifaces,
        signals: state.signals.clone(),
        clock,
        info,
        host_signals: Some(host_signals),
        trace: config.trace_syscalls,
        unknown_seen: Default::default(),
        exit: None,
        snapshot_before_bind: false,
        skip_return: false,
        fpu_frames: state.fpu_frames.clone(),
        fpu_to_restore: None,
    };
    let cpu = CpuState::from_saved(state.regs, state.sregs);
    Ok(Restored {
        guest,
        cpu,
        ext: state.ext,
        pending_syscall: state.in_syscall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_file_is_sparse_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let mut ram = GuestRam::anonymous(16 << 20).unwrap();
        ram.write(0x5000, b"page five").unwrap();
        ram.write((16 << 20) - 8, b"lastpage").unwrap();
        let path = dir.path().join(MEMORY_FILE);
        write_memory(&path, &ram).unwrap();
        let f = open_memory(dir.path(), 16 << 20).unwrap();
        // Mapped privately: contents visible, writes do not reach the file.
        let mut copy = GuestRam::file_private(f, MEM_HEADER, 16 << 20).unwrap();
        let mut b = [0u8; 9];
        copy.read(0x5000, &mut b).unwrap();
        assert_eq!(&b, b"page five");
        copy.write(0x5000, b"PAGE FIVE").unwrap();
        let again =
            GuestRam::file_private(open_memory(dir.path(), 16 << 20).unwrap(), MEM_HEADER, 16 << 20).unwrap();
        again.read(0x5000, &mut b).unwrap();
        assert_eq!(&b, b"page five", "copy-on-write: the file is unchanged");
        // Sparse: far fewer blocks than the file length.
        let meta = std::fs::metadata(&path).unwrap();
        assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 1 << 20);
        // Validation.
        assert!(open_memory(dir.path(), 32 << 20).is_err(), "size mismatch");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(open_memory(dir.path(), 16 << 20).is_err(), "truncated");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let e = open_memory(dir.path(), 16 << 20).unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
    }

    #[test]
    fn state_file_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_state(dir.path()).err().unwrap().to_string();
        assert!(e.contains("state.json"), "{e}");
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        assert!(read_state(dir.path())
            .err()
            .unwrap()
            .to_string()
            .contains("not valid JSON"));
        std::fs::write(dir.path().join(STATE_FILE), r#"{"magic":"other","version":1}"#).unwrap();
        assert!(read_state(dir.path())
            .err()
            .unwrap()
            .to_string()
            .contains("not an agl-vmm snapshot"));
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"magic":"agl-vmm-snapshot","version":99}"#,
        )
        .unwrap();
        assert!(read_state(dir.path())
            .err()
            .unwrap()
            .to_string()
            .contains("version"));
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"magic":"agl-vmm-snapshot","version":1}"#,
        )
        .unwrap();
        assert!(read_state(dir.path())
            .err()
            .unwrap()
            .to_string()
            .contains("bad state"));
    }
}
