//! Kernel CAN into containers: a vxcan pair per bus, one end in the pod's network namespace, the other on
//! the host, bridged to the scenario's bus.
//!
//! Used by the container environment where the host kernel has CAN (`socket(AF_CAN)` works; force either
//! way with `--can-transport kernel|emulated|hub`). The container's network namespace is held by its PID 1,
//! `pod-init`, which starts the workload only when asked, so for each bus the harness first runs
//!
//! ```text
//! ip link add <host-if> type vxcan peer name <can-if> netns <pause pid>
//! ip link set <host-if> up
//! nsenter -t <pause pid> -n ip link set <can-if> up
//! ```
//!
//! and a [`CanBridge`] forwards frames between `socketcan:<host-if>` and the scenario's hub, so the workload
//! uses the real SocketCAN API (`CAN_BUS=socketcan:can0`) while the bus stays recorded and ordered by the hub.
//!
//! Requirements on the host: modules `can`, `can-raw` and `vxcan` (`modprobe can can-raw vxcan`; on Ubuntu
//! `linux-modules-extra-$(uname -r)`), `ip` and `nsenter` (iproute2, util-linux), and `CAP_NET_ADMIN` for the
//! harness (root, or `setcap cap_net_admin+ep`). The containers themselves need no capability: the pair is
//! created from the host side. The pair disappears with the namespace (when the container is removed); workload
//! restarts inside the container, and reuse of the container by the next scenario, keep it (the bridge is
//! re-pointed at the new scenario's hub).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vcan::{CanSocket, Endpoint, OpenOptions};

/// The commands that create (and remove) one vxcan pair into a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxcanPlan {
    /// Pid of a process in the target network namespace (the pod's pause container).
    pub pid: u32,
    /// Host-side interface name (at most 15 characters).
    pub host_if: String,
    /// Interface name inside the namespace (`can0`, `can1`, ...).
    pub pod_if: String,
}

impl VxcanPlan {
    /// A plan for bus number `index` of pod instance `pod_seq`; host names are unique per run.
    pub fn new(pid: u32, pod_seq: usize, index: usize) -> VxcanPlan {
        // "vxp" + up to 8 digits + "c" + index stays within IFNAMSIZ - 1.
        VxcanPlan {
            pid,
            host_if: format!("vxp{}c{index}", pod_seq % 100_000_000),
            pod_if: format!("can{index}"),
        }
    }

    /// Commands (argv) that create the pair and bring both ends up.
    pub fn setup(&self) -> Vec<Vec<String>> {
        let pid = self.pid.to_string();
        vec![
            argv(&[
                "ip",
                "link",
                "add",
                &self.host_if,
                "type",
                "vxcan",
                "peer",
                "name",
                &self.pod_if,
                "netns",
                &pid,
            ]),
            argv(&["ip", "link", "set", &self.host_if, "up"]),
            argv(&[
                "nsenter",
                "-t",
                &pid,
                "-n",
                "ip",
                "link",
                "set",
                &self.pod_if,
                "up",
            ]),
        ]
    }

    /// Commands that remove the pair (deleting either end deletes both).
    pub fn teardown(&self) -> Vec<Vec<String>> {
        vec![argv(&["ip", "link", "del", &self.host_if])]
    }

    /// The endpoint the workload uses inside the pod.
    pub fn pod_endpoint(&self) -> String {
        format!("socketcan:{}", self.pod_if)
    }

    /// The host-side endpoint the bridge joins.
    pub fn host_endpoint(&self) -> Endpoint {
        Endpoint::SocketCan(self.host_if.clone())
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// A vxcan setup command (`ip link ...`) that could not run or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    #[error("`{command}`: {reason}")]
    Spawn { command: String, reason: String },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Runs a plan's commands, stopping at the first failure with its stderr.
pub async fn run_commands(commands: &[Vec<String>]) -> Result<(), CommandError> {
    for cmd in commands {
        let Some((program, args)) = cmd.split_first() else {
            continue;
        };
        let out = tokio::process::Command::new(program)
            .args(args)
            .output()
            .await
            .map_err(|e| CommandError::Spawn {
                command: cmd.join(" "),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(CommandError::Failed {
                command: cmd.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Forwards frames both ways between two buses until dropped.
///
/// One node on each bus, one thread: a node does not receive its own frames, so nothing loops back.
pub struct CanBridge {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    forwarded: Arc<AtomicU64>,
}

impl CanBridge {
    /// Joins both buses (as nodes named `bridge`) and starts forwarding.
    pub fn start(a: &Endpoint, b: &Endpoint) -> Result<CanBridge, vcan::BusError> {
        let options = OpenOptions {
            node_name: "bridge".into(),
            fd: true,
            want_errors: true,
            ..OpenOptions::default()
        };
        let (a, b) = (vcan::open(a, &options)?, vcan::open(b, &options)?);
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, forwarded) = (stop.clone(), forwarded.clone());
            std::thread::spawn(move || forward(a, b, &stop, &forwarded))
        };
        Ok(CanBridge {
            stop,
            thread: Some(thread),
            forwarded,
        })
    }

    /// Frames forwarded so far, both directions.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }
}

fn forward(mut a: Box<dyn CanSocket>, mut b: Box<dyn CanSocket>, stop: &AtomicBool, forwarded: &AtomicU64) {
    while !stop.load(Ordering::SeqCst) {
        let (Some(ab), Some(ba)) = (drain(&mut *a, &mut *b), drain(&mut *b, &mut *a)) else {
            return;
        };
        forwarded.fetch_add(ab + ba, Ordering::SeqCst);
        let moved = ab + ba > 0;
        if !moved {
            let mut fds = [
                libc::pollfd {
                    fd: a.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: b.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd entries; a 20 ms timeout keeps the stop flag responsive.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 20) };
        }
    }
}

/// Forwards everything `from` has ready to `to`; the count, or `None` when either side failed.
fn drain(from: &mut dyn CanSocket, to: &mut dyn CanSocket) -> Option<u64> {
    let mut n = 0;
    loop {
        match from.recv(Some(Duration::ZERO)) {
            Ok(Some(r)) => {
                to.send(&r.frame).ok()?;
                n += 1;
            }
            Ok(None) => return Some(n),
            Err(_) => return None,
        }
    }
}

impl Drop for CanBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcan::hub::{Hub, HubConfig};

    #[test]
    fn plan_moves_the_peer_into_the_namespace() {
        let plan = VxcanPlan::new(4242, 7, 0);
        assert_eq!(plan.host_if, "vxp7c0");
        assert_eq!(plan.pod_endpoint(), "socketcan:can0");
        let setup = plan.setup();
        assert_eq!(
            setup[0].join(" "),
            "ip link add vxp7c0 type vxcan peer name can0 netns 4242"
        );
        assert_eq!(setup[2].join(" "), "nsenter -t 4242 -n ip link set can0 up");
        assert_eq!(plan.teardown()[0].join(" "), "ip link del vxp7c0");
        assert!(
            VxcanPlan::new(1, 99_999_999, 9).host_if.len() <= 15,
            "fits IFNAMSIZ"
        );
    }

    #[test]
    fn bridge_forwards_both_ways_between_two_buses() {
        let dir = tempfile::tempdir().unwrap();
        let hub = |n: &str| {
            Hub::start(HubConfig {
                name: n.into(),
                unix_path: Some(dir.path().join(format!("{n}.sock"))),
                ..HubConfig::default()
            })
            .unwrap()
        };
        let (left, right) = (hub("left"), hub("right"));
        let (le, re) = (left.unix_endpoint().unwrap(), right.unix_endpoint().unwrap());
        let bridge = CanBridge::start(&le, &re).unwrap();
        let opts = OpenOptions {
            node_name: "t".into(),
            ..OpenOptions::default()
        };
        let mut l = vcan::open(&le, &opts).unwrap();
        let mut r = vcan::open(&re, &opts).unwrap();
        l.send(&"123#01".parse().unwrap()).unwrap();
        let got = r
            .recv(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("frame crossed left -> right");
        assert_eq!(got.frame.to_string(), "123#01");
        r.send(&"456#02".parse().unwrap()).unwrap();
        let got = l
            .recv(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("frame crossed right -> left");
        assert_eq!(got.frame.to_string(), "456#02");
        assert!(
            l.recv(Some(Duration::from_millis(100))).unwrap().is_none(),
            "no echo loop"
        );
        assert_eq!(bridge.forwarded(), 2);
    }
}
