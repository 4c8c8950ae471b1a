//! A [socketcand](https://github.com/linux-can/socketcand) server whose buses are userspace hub buses, so
//! socketcand clients (python-can's `socketcand` interface, SavvyCAN, Kayak, plain TCP scripts) can join a
//! scenario's bus like any workload.
//!
//! ```no_run
//! use vcan::bridge::Bridge;
//! use vcan_socketcand::{SocketcandConfig, SocketcandServer};
//!
//! let mut server = SocketcandServer::start(SocketcandConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     allow_remote: false,
//! })?;
//! server.set_bus("body", "unix:/run/vcan/body.sock".parse()?);
//! println!("python-can: can.Bus(interface='socketcand', host='127.0.0.1', port={}, channel='body')",
//!          server.local_addr().port());
//! let report = server.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it maps onto the bus
//!
//! One thread accepts connections; each client gets a thread of its own. The server greets with
//! `< hi >`; at `< open BUS >` the client's thread joins the hub that [`SocketcandServer::set_bus`]
//! registered under that name as one bridge node, `socketcand:<client ip>:<client port>`
//! ([`vcan::bridge`]), and answers `< ok >`. A bus name that is not registered gets
//! `< error could not open bus >` and the connection is closed, as socketcand does (a registered bus
//! whose hub cannot be joined gets `< error could not start interface BUS >`, likewise). Frames the client
//! sends enter the bus as that node's; the node receives every frame of the other nodes (not its own) and
//! the mode decides what the client sees. The node's [`vcan::bridge::BridgeCounters`] count frames each
//! way and every rejected message; [`vcan::bridge::Bridge::report`] lists them.
//!
//! # Supported
//!
//! * **BCM mode** (the mode after `open`): `send`, `add` (cyclic send job keyed by id, sent at once and
//!   then every interval; interval 0 sends once), `update`, `delete`, `filter` (content filter: the first
//!   frame and then frames whose bytes under the mask changed), `subscribe`, `unsubscribe`, with throttle
//!   intervals; received frames as `< frame ID SECS.USECS B0 B1 …  >` (socketcand's BCM format, bytes
//!   spaced). See [`bcm`] for the exact semantics, modelled on Linux `CAN_BCM`.
//! * **Raw mode** (`< rawmode >`): `send`; every data frame of the bus as `< frame ID SECS.USECS DATA >`
//!   and every error frame as `< error CLASS SECS.USECS >` (the node joins with error frames enabled;
//!   socketcand needs `-e` for that).
//! * **Control mode** (`< controlmode >`): `statistics MS` (0 stops) sends
//!   `< stat rbytes rpackets tbytes tpackets >` every `MS` ms: the client's own node's counts (frames
//!   received from and sent to the bus, payload bytes), not a kernel interface's.
//! * `echo` in every state (also before `open`), and the mode switches after `open` (answered `< ok >`,
//!   also when the mode does not change).
//!   Leaving BCM mode ends its jobs and subscriptions and leaving control mode ends the statistics, as in
//!   socketcand.
//! * Framing exactly as the protocol has it: messages are split on `<`/`>`, one read may hold several,
//!   a message may span reads; timestamps are the hub's (wall clock, microseconds).
//! * Extended ids are written with exactly 8 hex digits, standard ids with 1-3 ([`protocol`]).
//!
//! # Deliberately not supported
//!
//! * **Classic CAN only**: socketcand has no CAN FD syntax. CAN FD frames of the bus are not passed on;
//!   they are counted and noted in the node's report when the client leaves. Remote (RTR) frames are not
//!   passed on either (socketcand drops them too), likewise counted.
//! * ISO-TP mode (`isotpmode`, `isotpconf`, `sendpdu`), `muxfilter`, and bus configuration
//!   (`< can0 B … >`, `< can0 C … >`: the buses are virtual) are answered with an error.
//! * No UDP discovery beacon: the harness tells clients where the server is.
//! * No authentication: the server listens on loopback unless [`SocketcandConfig::allow_remote`].
//!
//! # Errors: where this server differs from socketcand
//!
//! socketcand answers only unknown commands with `< error unknown command >` and silently ignores
//! malformed ones (a `send` whose byte count differs from its dlc, a bad id, ...). This server answers
//! **every** message it cannot act on with `< error REASON >` naming the problem (`dlc 2 but 1 data
//! bytes`, `unknown command `foo``, `no send job for id 123`, `` `add` is not available in rawmode ``,
//! text outside `< >`, a message longer than 4096 bytes), counts it as rejected on the client's node,
//! and keeps the connection open. `filter`, `subscribe`, `add`, `update`, `delete` and `unsubscribe`
//! send no reply when they succeed, as in socketcand. Input before `open` cannot be counted on a node
//! (there is none yet); it is answered and logged.

pub mod bcm;
pub mod protocol;
mod server;
mod session;

pub use server::{SocketcandConfig, SocketcandServer, DEFAULT_PORT};
pub use session::{PROTOCOL, WRITE_TIMEOUT};
