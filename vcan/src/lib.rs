//! The CAN layer of the AGL parity harness.
//!
//! Everything that touches CAN frames lives here, so that workloads, the harness and the virtual machine
//! monitor speak one model:
//!
//! * [`frame`]: classic CAN, CAN FD and error frames with validating constructors and the can-utils
//!   `candump` text syntax (`123#1122`, `1ABCDEF0##1AA`, `123#R`).
//! * [`filter`]: acceptance filters with SocketCAN `CAN_RAW_FILTER` semantics.
//! * [`socket`]: the [`CanSocket`] trait every bus backend implements, and what a received frame carries.
//! * [`endpoint`]: bus endpoint URIs (`socketcan:can0`, `unix:/run/vcan/body.sock`, `tcp:127.0.0.1:29536`)
//!   and the one function, [`endpoint::open`], that turns a URI into a connected [`CanSocket`].
//!   ([`Endpoint`] and [`OpenOptions`] are defined in a private module below the backends, which take
//!   them, and re-exported by `endpoint`.)
//! * [`wire`]: the framing spoken between bus nodes and the userspace hub.
//! * [`hub`]: the userspace virtual bus: one global delivery order, echo, filters, timestamps, sequence
//!   numbers, explicit backpressure with per-node drop counters.
//! * [`client`]: the [`CanSocket`] of a node joined to a hub over a Unix socket or TCP.
//! * [`kernel`]: the [`CanSocket`] over kernel SocketCAN (`vcan0`, `can0`), used wherever the kernel has CAN.
//! * [`candump`]: reader and writer of the `candump -l` log format.
//! * [`asc`]: reader and writer of Vector ASC traces (CANalyzer, python-can, `log2asc`).
//! * [`bittiming`]: a frame's length on the wire (ISO 11898-1, bit stuffing) and its duration at a bitrate.
//! * [`bustime`]: a bus with a bitrate in virtual time: transmit queues, arbitration, end-of-frame times.
//! * [`fault`]: fault injection in the hub (drop, delay, duplicate, reorder, corrupt, cut link, bus load,
//!   babble), deterministic from a seed.
//! * [`dbc`]: DBC databases: encode and decode messages by signal name.
//! * [`raw`]: Linux's `CAN_RAW` socket semantics (options, filters, `struct can_frame` layout, addresses,
//!   control messages) for programs given SocketCAN without a kernel: the VMM and [`emu`].
//! * [`emu`]: SocketCAN for unmodified host and container processes by seccomp user notification.
//! * [`bridge`]: what the protocol bridges (crates `vcan-socketcand`, `vcan-slcan`, `vcan-cannelloni`)
//!   share: bridge nodes named `<protocol>:<peer>`, their counters and reports, the [`bridge::Bridge`]
//!   trait and a stop signal.
//! * [`errno`]: Linux errno values as syscalls return them.
//! * [`callmem`]: what socket calls read from and write into their caller's memory (`msghdr`, addresses,
//!   received frames), for the VMM and [`emu`].
//!
//! Dependencies between the modules point one way: `frame` at the bottom; `filter`; `socket` (the trait
//! and [`BusError`]); the endpoint types; `wire`; the backends `kernel` and `client`; `hub` (which
//! re-exports the client's statistics query and the wire's statistics types); `endpoint` (which picks a
//! backend) on top. `candump` and `dbc` only use `frame`; `asc` uses `candump`'s record; `bustime` uses
//! `bittiming`; `fault` uses `bustime`; `hub` drives both; `bridge` uses `client`. Errors are typed per module: [`FrameError`],
//! [`BusError`], [`wire::DecodeError`] and [`wire::EncodeError`], [`kernel::RawFrameError`],
//! [`candump::TraceError`], [`dbc::DbcError`].

pub mod asc;
pub mod bittiming;
pub mod bridge;
pub mod bustime;
pub mod callmem;
pub mod candump;
pub mod client;
pub mod dbc;
pub mod emu;
pub mod endpoint;
pub mod errno;
pub mod fault;
pub mod filter;
pub mod frame;
pub mod hub;
pub mod kernel;
mod options;
pub mod raw;
pub mod socket;
pub mod wire;

pub use endpoint::{open, Endpoint, OpenOptions};
pub use filter::Filter;
pub use frame::{CanId, FdFlags, Frame, FrameError};
pub use socket::{BusError, CanSocket, Received};
