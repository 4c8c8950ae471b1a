//! An slcan (LAWICEL) serial-line CAN adapter, emulated on a pseudo-terminal, whose CAN bus is a userspace
//! vcan hub bus.
//!
//! [`SlcanPort::start`] opens a pseudo-terminal, links its slave at a chosen path (`/tmp/x/slcan0`) and
//! joins the hub as the bridge node `slcan:<link>`. Any slcan host tool — python-can's `slcan` interface,
//! `slcand` plus the kernel `slcan` driver, a CANable application — then opens the link as its serial
//! port: `S6\rO\r` opens the channel at 500 kbit/s, `t1232AABB\r` puts 0x123 `AA BB` on the hub bus, and
//! every frame of the bus arrives as a `t…\r`/`T…\r`/`r…\r`/`R…\r` line (CAN FD as `d`/`D`/`b`/`B`).
//!
//! * [`protocol`]: the line protocol and the adapter's state machine, without I/O (what each command
//!   answers is tabled there).
//! * `pty`: the pseudo-terminal pair in raw mode.
//! * `port`: [`SlcanPort`], the thread that serves the pty and the hub node; it implements
//!   [`vcan::bridge::Bridge`].
//!
//! Not emulated: bit timing (the bitrate the host sets is recorded in [`SlcanStatus`] but the hub's
//! timing is the bus's own), acceptance filters (`M`/`m` are accepted and every frame passes), polling
//! (`P`, `A`, `X0` are refused; frames are always forwarded), error and bus-state lines (`e…`, `s…`; error
//! frames are not passed on) and the FD error state indicator (no slcan form).

mod port;
pub mod protocol;
mod pty;

pub use port::{SlcanConfig, SlcanPort, OUT_HIGH_WATER};
pub use protocol::{ChannelMode, SlcanStatus};
