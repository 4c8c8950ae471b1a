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
//! Use: [`spawn`] a `std::process::Command`; or make a [`ChildChannel`] ([`ChildChannel::serving`], or
//! [`ChildChannel::with`] a handler of the listener), give [`ChildChannel::hook`] to the command's
//! `pre_exec`, spawn, and [`ChildChannel::finish`]. The filter stays with the program across `fork` and `exec`; its children are
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
    #[error("cannot start the program: {0}")]
    Spawn(#[source] io::Error),
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
///
/// A thread takes the listener the moment the child sends it and hands it to the channel's handler: to
/// serve it ([`ChildChannel::serving`]) or to pass it on (`pod-init` sends it to the harness). It must not
/// wait for the spawn to return: between installing the filter and `exec`, the child may still make a
/// notified call (the standard library writes an `exec` failure to its parent with `write`), which would
/// otherwise wait for a supervisor forever while the parent waits for the child.
pub struct ChildChannel<R: Send + 'static = Emulation> {
    child: OwnedFd,
    filter: Arc<SyscallFilter>,
    taker: Option<JoinHandle<Result<R, EmuError>>>,
}

impl ChildChannel<Emulation> {
    /// A channel whose listener is served on `ifaces` as soon as it arrives; [`ChildChannel::finish`] gives
    /// the running [`Emulation`].
    pub fn serving(ifaces: Interfaces, node_name: String) -> Result<ChildChannel<Emulation>, EmuError> {
        ChildChannel::with(move |listener| Emulation::start(listener, ifaces, node_name))
    }
}

impl<R: Send + 'static> ChildChannel<R> {
    /// A channel whose listener goes to `handler` (on the taker thread) as soon as the child sends it.
    pub fn with(
        handler: impl FnOnce(OwnedFd) -> Result<R, EmuError> + Send + 'static,
    ) -> Result<ChildChannel<R>, EmuError> {
        // SEQPACKET, so that the taker sees the end of the channel when the child is gone without sending.
        let (parent, child) = seccomp::seqpacket_pair().map_err(|source| EmuError::Io {
            what: "socketpair for the listener",
            source,
        })?;
        let taker = std::thread::Builder::new()
            .name("socketcan-emu-taker".into())
            .spawn(move || {
                set_receive_timeout(parent.as_raw_fd(), 30);
                let what = "receiving the seccomp listener";
                match receive_fd(parent.as_raw_fd()) {
                    Ok(Ok(listener)) => handler(listener),
                    Ok(Err(_)) => Err(EmuError::Io {
                        what,
                        source: io::Error::other("no descriptor came with the message"),
                    }),
                    Err(source) => Err(EmuError::Io { what, source }),
                }
            })
            .map_err(|source| EmuError::Io {
                what: "starting the listener thread",
                source,
            })?;
        Ok(ChildChannel {
            child,
            filter: Arc::new(SyscallFilter::new()),
            taker: Some(taker),
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

    /// After a successful spawn: what the handler made of the listener (the child sent it before `exec`).
    pub fn finish(mut self) -> Result<R, EmuError> {
        let taker = self.taker.take();
        // Closing our copy of the child's end lets the taker see the end of a channel nobody sent on.
        drop(self);
        match taker.map(|t| t.join()) {
            Some(Ok(result)) => result,
            _ => Err(EmuError::Io {
                what: "receiving the seccomp listener",
                source: io::Error::other("the listener thread ended abnormally"),
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

/// Spawns `command` with SocketCAN emulated for it on `ifaces` (bus nodes named `node_name`), and
/// `PR_SET_PDEATHSIG` so it dies with this process (without its supervisor its CAN calls would fail). The
/// child is killed again if the emulation cannot start.
pub fn spawn(
    command: &mut std::process::Command,
    ifaces: Interfaces,
    node_name: String,
) -> Result<(std::process::Child, Emulation), EmuError> {
    use std::os::unix::process::CommandExt;
    available()?;
    let channel = ChildChannel::serving(ifaces, node_name)?;
    // SAFETY: prctl and the hook only make system calls (prctl, seccomp, sendmmsg, close).
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
        command.pre_exec(channel.hook());
    }
    let mut child = command.spawn().map_err(EmuError::Spawn)?;
    match channel.finish() {
        Ok(emulation) => Ok((child, emulation)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
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
