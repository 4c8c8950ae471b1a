//! SocketCAN in the guest: `socket(AF_CAN, SOCK_RAW, CAN_RAW)` served by [`vcan::raw`], the one `CAN_RAW`
//! semantics of the project (shared with the seccomp emulation of native and container processes).
//!
//! Interfaces come from `--can IFNAME=ENDPOINT` (ifindex 1, 2, ... in order). A guest CAN socket is a
//! [`GuestCanSocket`]: a separate node on its interface's bus, joined when the guest `bind`s it. Readiness
//! for `poll` comes from the socket's local receive queue, refilled from the bus connection without
//! blocking ([`GuestCanSocket::readable`]), so `poll` never reports a socket readable that then has nothing
//! to read.

pub use vcan::raw::{
    control_messages, decode_frame, encode_frame, parse_filters, parse_sockaddr_can, recv_flags,
    sockaddr_can, Interfaces, AF_CAN, CANFD_MTU, CAN_MTU, CAN_RAW, SOCKADDR_CAN_LEN,
};

/// The options of a guest CAN socket (what a snapshot keeps).
pub type CanOptions = vcan::raw::RawOptions;

/// A guest `CAN_RAW` socket.
pub type GuestCanSocket = vcan::raw::RawSocket;
