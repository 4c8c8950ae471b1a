//! A [cannelloni](https://github.com/mguentner/cannelloni) bridge: CAN frames between a userspace vcan
//! hub bus and a remote cannelloni peer over UDP, in cannelloni's datagram format version 2 (classic CAN,
//! remote, error and CAN FD frames).
//!
//! * [`codec`]: the datagram format with no I/O — [`codec::Encoder`] packs frames into numbered datagrams
//!   that fit the MTU, [`codec::decode`] validates a datagram completely and says which field at which
//!   offset is wrong.
//! * [`seq`]: counting lost, reordered and duplicated datagrams from their wrapping `u8` sequence numbers.
//! * [`bridge`]: [`CannelloniBridge`], the running link (one UDP socket, one peer, one bridge node named
//!   `cannelloni:<peer ip:port>` on the hub), implementing [`vcan::bridge::Bridge`].
//!
//! A peer is either the real `cannelloni` tool (`cannelloni -I vcan0 -R <our ip> -r <our port> -l <its
//! port>`) or another [`CannelloniBridge`], which links two hub buses. Only UDP is spoken: cannelloni's
//! SCTP and TCP transports are not.
//!
//! Modules point one way: `codec` and `seq` are independent; `bridge` uses both.

pub mod bridge;
pub mod codec;
pub mod seq;

pub use bridge::{
    CannelloniBridge, CannelloniConfig, DEFAULT_BATCH_TIMEOUT, DEFAULT_MTU, DEFAULT_PORT, PROTOCOL,
};
pub use codec::{DecodeError, Packet};
