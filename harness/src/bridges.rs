//! Third-party CAN tools on a run's scenario buses: socketcand, slcan and cannelloni bridges.
//!
//! A project asks for bridges in its project file (`bridges:` in `agl-parity.yaml`), and `run
//! --socketcand PORT` asks for a socketcand server from the command line:
//!
//! ```yaml
//! bridges:
//!   socketcand: 29536               # or 127.0.0.1:29536, or {listen: 29536, buses: [body], allow_remote: false}
//!   slcan:                          # per bus: an slcan (LAWICEL) adapter on a pty linked at the path
//!     body: /tmp/agl-slcan-body
//!   cannelloni:                     # per bus: a cannelloni UDP link to a peer (another hub, CANdevStudio)
//!     vehicle: {local: 127.0.0.1:20000, remote: 127.0.0.1:20001}
//! ```
//!
//! One socketcand server serves the whole run (loopback only unless `allow_remote`); each scenario bus is
//! open to its clients by the bus's name (`< open body >`) while the scenario runs. slcan and cannelloni
//! bridges are made per scenario bus. Because a bridge binds a fixed port or path per bus name, a run with
//! bridges runs its scenarios one at a time ([`RunBridges::is_empty`] tells the runner).
//!
//! Every bridge joins the scenario's hub as ordinary nodes (`vcan::bridge`), so filters, echo, drops and
//! the scenario's faults apply to what enters through it, and [`BusBridges::finish`] names every bridge
//! node of the bus with its counters in the bus's record.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use vcan::bridge::{Bridge, BridgeError, BridgeReport};
use vcan::hub::HubStats;
use vcan::Endpoint;
use vcan_cannelloni::{CannelloniBridge, CannelloniConfig};
use vcan_slcan::{SlcanConfig, SlcanPort};
use vcan_socketcand::{SocketcandConfig, SocketcandServer};

/// The socketcand port when none is given (socketcand's own).
pub const SOCKETCAND_PORT: u16 = 29536;

/// The bridges a project asks for (`bridges:` in the project file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// A socketcand server for the run's buses.
    #[serde(default)]
    pub socketcand: Option<SocketcandSetting>,
    /// Per bus name: where its slcan pty is linked.
    #[serde(default)]
    pub slcan: BTreeMap<String, PathBuf>,
    /// Per bus name: its cannelloni link.
    #[serde(default)]
    pub cannelloni: BTreeMap<String, CannelloniSetting>,
}

/// `bridges.socketcand`: a port, an `ip:port`, or the long form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct SocketcandSetting {
    pub listen: SocketAddr,
    /// The buses it serves; `None`: every bus.
    pub buses: Option<BTreeSet<String>>,
    /// Listen on a non-loopback address.
    pub allow_remote: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketcandLong {
    listen: serde_yaml::Value,
    #[serde(default)]
    buses: Option<BTreeSet<String>>,
    #[serde(default)]
    allow_remote: bool,
}

impl SocketcandSetting {
    /// Every bus, on the loopback address at `listen` (`29536` or `127.0.0.1:29536`).
    pub fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
        let listen = listen.trim();
        if let Ok(port) = listen.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
        listen.parse::<SocketAddr>().map_err(|_| {
            format!("`{listen}` is not a port or a numeric `ip:port` (e.g. {SOCKETCAND_PORT} or 127.0.0.1:{SOCKETCAND_PORT})")
        })
    }
}

fn listen_from_value(v: &serde_yaml::Value) -> Result<SocketAddr, String> {
    match v {
        serde_yaml::Value::Number(n) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .ok_or_else(|| format!("port {n} is not 0..=65535")),
        serde_yaml::Value::String(s) => SocketcandSetting::parse_listen(s),
        _ => Err("expected a port or an `ip:port`".into()),
    }
}

impl TryFrom<serde_yaml::Value> for SocketcandSetting {
    type Error = String;

    fn try_from(v: serde_yaml::Value) -> Result<Self, String> {
        if let serde_yaml::Value::Mapping(_) = v {
            let long: SocketcandLong = serde_yaml::from_value(v).map_err(|e| {
                format!(
                    "{e} (the long form is {{listen: PORT or IP:PORT, buses: [names], allow_remote: false}})"
                )
            })?;
            return Ok(SocketcandSetting {
                listen: listen_from_value(&long.listen)?,
                buses: long.buses,
                allow_remote: long.allow_remote,
            });
        }
        Ok(SocketcandSetting {
            listen: listen_from_value(&v)?,
            buses: None,
            allow_remote: false,
        })
    }
}

/// `bridges.cannelloni.<bus>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannelloniSetting {
    /// The UDP address this side binds.
    pub local: SocketAddr,
    /// The peer's UDP address.
    pub remote: SocketAddr,
    /// How long frames are gathered into one datagram, in milliseconds (default 1).
    #[serde(default)]
    pub batch_ms: Option<u64>,
}

impl BridgeSettings {
    pub fn is_empty(&self) -> bool {
        self.socketcand.is_none() && self.slcan.is_empty() && self.cannelloni.is_empty()
    }

    /// The settings with relative slcan paths joined with the project root.
    pub fn rooted(mut self, root: &Path) -> BridgeSettings {
        for path in self.slcan.values_mut() {
            *path = root.join(&*path);
        }
        self
    }
}

/// The bridges of a running run: the socketcand server, and what each bus gets.
pub struct RunBridges {
    settings: BridgeSettings,
    socketcand: Option<Arc<Mutex<SocketcandServer>>>,
    socketcand_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for RunBridges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunBridges")
            .field("settings", &self.settings)
            .field("socketcand", &self.socketcand_addr)
            .finish()
    }
}

impl RunBridges {
    /// No bridges.
    pub fn none() -> RunBridges {
        RunBridges {
            settings: BridgeSettings::default(),
            socketcand: None,
            socketcand_addr: None,
        }
    }

    /// Starts the run-wide part (the socketcand server).
    pub fn start(settings: BridgeSettings) -> Result<RunBridges, BridgeError> {
        let mut socketcand_addr = None;
        let socketcand = match &settings.socketcand {
            Some(s) => {
                let server = SocketcandServer::start(SocketcandConfig {
                    listen: s.listen,
                    allow_remote: s.allow_remote,
                })?;
                socketcand_addr = Some(server.local_addr());
                Some(Arc::new(Mutex::new(server)))
            }
            None => None,
        };
        Ok(RunBridges {
            settings,
            socketcand,
            socketcand_addr,
        })
    }

    /// True when the run has no bridges (scenarios may then run concurrently).
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    /// What the run offers third-party tools, one line each, for the start of a run.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(addr), Some(s)) = (self.socketcand_addr, &self.settings.socketcand) {
            let buses = match &s.buses {
                Some(b) => b.iter().cloned().collect::<Vec<_>>().join(", "),
                None => "every scenario bus, by its name".into(),
            };
            out.push(format!("socketcand server on {addr} ({buses})"));
        }
        for (bus, path) in &self.settings.slcan {
            out.push(format!("slcan adapter of bus {bus} at {}", path.display()));
        }
        for (bus, c) in &self.settings.cannelloni {
            out.push(format!(
                "cannelloni link of bus {bus}: udp {} ↔ {}",
                c.local, c.remote
            ));
        }
        out
    }

    /// Puts the bridges of bus `bus` (its hub at `hub`) in place for one scenario.
    pub fn attach(&self, bus: &str, hub: &Endpoint) -> Result<BusBridges, BridgeError> {
        let mut own: Vec<Box<dyn Bridge>> = Vec::new();
        if let Some(link) = self.settings.slcan.get(bus) {
            own.push(Box::new(SlcanPort::start(SlcanConfig {
                link: link.clone(),
                hub: hub.clone(),
            })?));
        }
        if let Some(c) = self.settings.cannelloni.get(bus) {
            own.push(Box::new(CannelloniBridge::start(CannelloniConfig {
                local: c.local,
                remote: c.remote,
                hub: hub.clone(),
                batch_timeout: std::time::Duration::from_millis(c.batch_ms.unwrap_or(1)),
                mtu: 1500,
                fd: true,
            })?));
        }
        let served = self
            .settings
            .socketcand
            .as_ref()
            .is_some_and(|s| s.buses.as_ref().is_none_or(|b| b.contains(bus)));
        let socketcand = match (&self.socketcand, served) {
            (Some(server), true) => {
                if let Ok(s) = server.lock() {
                    s.set_bus(bus, hub.clone());
                }
                Some(Arc::clone(server))
            }
            _ => None,
        };
        Ok(BusBridges {
            bus: bus.to_string(),
            socketcand,
            own,
        })
    }

    /// Stops the run-wide bridges.
    pub fn stop(&self) -> Option<BridgeReport> {
        let server = self.socketcand.as_ref()?;
        let mut s = server.lock().ok()?;
        Some(s.stop())
    }
}

/// The bridges of one scenario bus.
pub struct BusBridges {
    bus: String,
    socketcand: Option<Arc<Mutex<SocketcandServer>>>,
    own: Vec<Box<dyn Bridge>>,
}

impl BusBridges {
    /// No bridges (a bus the project bridges nothing to, or an attached bench bus).
    pub fn none(bus: &str) -> BusBridges {
        BusBridges {
            bus: bus.to_string(),
            socketcand: None,
            own: Vec::new(),
        }
    }

    /// Closes the bus to new socketcand clients and stops its own bridges; their reports follow. Call
    /// before the hub stops (bridge nodes leave first).
    pub fn stop(&mut self) -> Vec<BridgeReport> {
        let mut reports = Vec::new();
        if let Some(server) = &self.socketcand {
            if let Ok(s) = server.lock() {
                s.remove_bus(&self.bus);
                reports.push(s.report());
            }
        }
        for bridge in &mut self.own {
            reports.push(bridge.stop());
        }
        reports
    }
}

/// Reports restricted to the nodes that joined this bus (`stats`: the hub's list of nodes), dropping
/// bridges none of whose nodes did (a socketcand server nobody opened this bus on).
pub fn bus_reports(reports: Vec<BridgeReport>, stats: Option<&HubStats>) -> Vec<BridgeReport> {
    let joined: BTreeSet<&str> = stats
        .map(|s| s.nodes.iter().map(|n| n.name.as_str()).collect())
        .unwrap_or_default();
    reports
        .into_iter()
        .map(|mut r| {
            if r.protocol == "socketcand" {
                r.nodes.retain(|n| joined.contains(n.node.as_str()));
            }
            r
        })
        .filter(|r| !r.nodes.is_empty() || r.protocol != "socketcand")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<BridgeSettings, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn socketcand_is_a_port_an_address_or_the_long_form() {
        let s = parse("socketcand: 29536").unwrap().socketcand.unwrap();
        assert_eq!(s.listen, "127.0.0.1:29536".parse().unwrap());
        assert_eq!(s.buses, None);
        let s = parse("socketcand: \"0.0.0.0:4000\"").unwrap().socketcand.unwrap();
        assert_eq!(s.listen, "0.0.0.0:4000".parse().unwrap());
        let s = parse("socketcand: {listen: 4001, buses: [body], allow_remote: true}")
            .unwrap()
            .socketcand
            .unwrap();
        assert_eq!(s.listen.port(), 4001);
        assert!(s.allow_remote);
        assert_eq!(s.buses.unwrap().into_iter().collect::<Vec<_>>(), vec!["body"]);
    }

    #[test]
    fn bad_bridge_settings_are_named() {
        let e = parse("socketcand: 70000").unwrap_err();
        assert!(e.contains("70000"), "{e}");
        let e = parse("socketcand: localhost:1").unwrap_err();
        assert!(e.contains("numeric"), "{e}");
        let e = parse("socketcand: {port: 1}").unwrap_err();
        assert!(e.contains("long form"), "{e}");
        let e = parse("cannelloni: {body: {local: 127.0.0.1:1}}").unwrap_err();
        assert!(e.contains("remote"), "{e}");
        let e = parse("serial: {}").unwrap_err();
        assert!(e.contains("serial"), "{e}");
    }

    #[test]
    fn slcan_paths_are_rooted() {
        let s = parse("slcan: {body: run/slcan0}")
            .unwrap()
            .rooted(Path::new("/p"));
        assert_eq!(s.slcan["body"], PathBuf::from("/p/run/slcan0"));
        assert!(!s.is_empty());
        assert!(BridgeSettings::default().is_empty());
    }
}
