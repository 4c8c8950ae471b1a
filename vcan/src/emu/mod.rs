//! SocketCAN for unmodified host and container processes on machines without kernel CAN, by seccomp user
//! notification.
//!
//! A program started with the emulation gets the real SocketCAN API: `socket(AF_CAN, SOCK_RAW, CAN_RAW)`
//! returns a real descriptor (one end of a `SOCK_SEQPACKET` pair installed with `SECCOMP_IOCTL_NOTIF_ADDFD`),
//! so `read`/`write`/`poll`/`select`/`epoll`/`close`/`dup` on it run in the kernel with no interception;
//! `bind`, the interface `ioctl`s, `setsockopt`/`getsockopt`, `getsockname` and `recvmsg`/`recvfrom`/
//! `sendmsg`/`sendto` where addresses or control messages are involved are answered by a supervisor with
//! [`crate::raw`]'s semantics (the same module the VMM serves its guests with). Other sockets and system
//! calls run unchanged (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//!
//! * [`seccomp`]: the BPF program, installing it in a child, the listener's ioctls.
//! * [`target`]: the calling process's memory and descriptors.
//! * [`serve`]: the supervisor's loop ([`Supervisor`]) and the bridge of each emulated socket to its bus.
//!
//! Use: make a [`ChildChannel`], give [`ChildChannel::hook`] to the command's `pre_exec`, spawn, take the
//! listener with [`ChildChannel::listener`] and run it with [`Emulation::start`] (a thread) or
//! [`Supervisor::run`]. The filter stays with the program across `fork` and `exec`; its children are
//! emulated by the same supervisor.
//!
//! Known differences from kernel CAN_RAW, all documented in `docs/socketcan-emulation.md`: a 16-byte
//! `write` of an invalid frame (length code above 8, standard id above 0x7FF) or on an unbound socket
//! succeeds and the frame is dropped (counted in [`EmulationStats::dropped_writes`]); `recvmmsg`/`sendmmsg`
//! carry frames but no addresses; `CAN_BCM`, ISO-TP and J1939 sockets are `EPROTONOSUPPORT`.

pub mod seccomp;
pub mod serve;
pub mod target;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use seccomp::{receive_fd, send_fd, SyscallFilter};
pub use serve::{EmulationStats, Supervisor};

use crate::raw::Interfaces;
use crate::Endpoint;

/// First ifindex of emulated interfaces in a host or container network namespace: above the real
/// interfaces (`lo`, `eth0`, veths), so `SIOCGIFNAME` of a real index still reaches the kernel.
pub const IFINDEX_BASE: u32 = 4096;

/// Errors setting up the emulation.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    #[error("this kernel cannot emulate SocketCAN: {0}")]
    Unsupported(String),
    #[error("SocketCAN emulation: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Whether this kernel offers seccomp user notification (`user_notif` in
/// `/proc/sys/kernel/seccomp/actions_avail`, Linux 5.0; descriptor installing needs 5.9, `ADDFD_FLAG_SEND`
/// 5.14).
pub fn available() -> Result<(), EmuError> {
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map_err(|e| EmuError::Unsupported(format!("/proc/sys/kernel/seccomp/actions_avail: {e}")))?;
    if actions.split_whitespace().any(|a| a == "user_notif") {
        Ok(())
    } else {
        Err(EmuError::Unsupported(format!(
            "seccomp has no user_notif action (actions: {})",
            actions.trim()
        )))
    }
}

/// The interfaces a program sees, numbered from [`IFINDEX_BASE`].
pub fn interfaces(list: Vec<(String, Endpoint)>) -> Interfaces {
    Interfaces::with_base(list, IFINDEX_BASE)
}

/// The channel a child sends its listener over, and the filter it installs.
pub struct ChildChannel {
    parent: OwnedFd,
    child: OwnedFd,
    filter: Arc<SyscallFilter>,
}

impl ChildChannel {
    pub fn new() -> Result<ChildChannel, EmuError> {
        let mut pair = [0i32; 2];
        // SAFETY: socketpair writes two descriptors, owned right below.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(EmuError::Io {
                what: "socketpair for the listener",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: both were just created.
        let (parent, child) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        Ok(ChildChannel {
            parent,
            child,
            filter: Arc::new(SyscallFilter::new()),
        })
    }

    /// The `pre_exec` hook: installs the filter in the child and sends the listener. It allocates nothing
    /// and only makes system calls.
    pub fn hook(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let filter = self.filter.clone();
        let fd = self.child.as_raw_fd();
        // SAFETY (of the call inside): run by `pre_exec`, in the forked child before `exec`.
        move || unsafe { filter.install_in_child(fd) }
    }

    /// After the spawn: the listener the child sent (it did before `exec`, so it is already queued).
    pub fn listener(self) -> Result<OwnedFd, EmuError> {
        drop(self.child);
        set_receive_timeout(self.parent.as_raw_fd(), 10);
        match receive_fd(self.parent.as_raw_fd()) {
            Ok(Ok(fd)) => Ok(fd),
            Ok(Err(_)) => Err(EmuError::Io {
                what: "receiving the seccomp listener",
                source: io::Error::other("no descriptor came with the message"),
            }),
            Err(e) => Err(EmuError::Io {
                what: "receiving the seccomp listener",
                source: e,
            }),
        }
    }
}

fn set_receive_timeout(fd: RawFd, secs: i64) {
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO reads one timeval.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// A supervisor running on a thread of its own.
pub struct Emulation {
    stop: OwnedFd,
    thread: Option<JoinHandle<EmulationStats>>,
}

impl Emulation {
    /// Serves `listener` on a new thread; bus nodes are named `node_name`.
    pub fn start(listener: OwnedFd, ifaces: Interfaces, node_name: String) -> Result<Emulation, EmuError> {
        // SAFETY: eventfd returns a new descriptor, owned right below.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(EmuError::Io {
                what: "eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: just created.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let stop_fd = stop.as_raw_fd();
        let supervisor = Supervisor::new(listener, ifaces, node_name);
        let thread = std::thread::Builder::new()
            .name("socketcan-emu".into())
            .spawn(move || supervisor.run(Some(stop_fd)))
            .map_err(|e| EmuError::Io {
                what: "starting the emulation thread",
                source: e,
            })?;
        Ok(Emulation {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops serving (processes still using the filter then see `ENOSYS` for notified calls) and returns
    /// what was served.
    pub fn stop(mut self) -> EmulationStats {
        self.finish()
    }

    /// Waits until no process uses the filter any more.
    pub fn wait(mut self) -> EmulationStats {
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }

    fn finish(&mut self) -> EmulationStats {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes to the eventfd.
        unsafe {
            libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for Emulation {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}
