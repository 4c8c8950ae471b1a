//! Reuse of containers between scenarios: a container whose workload was stopped cleanly goes back to the
//! run's pool under its spec key, and the next scenario with the same key takes it instead of creating one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use testcontainers::{ContainerAsync, GenericImage};

use crate::env::vxcan::{CanBridge, VxcanPlan};
use crate::manifest::ContainerSpec;
use crate::volumes::HostMount;

/// A running container whose PID 1 is `pod-init`, waiting to start workload incarnations.
pub(super) struct Resident {
    pub(super) container: ContainerAsync<GenericImage>,
    /// Host path of the container's slot directory (bus symlinks, `init.sock`).
    pub(super) slot: PathBuf,
    /// Slot number (names the vxcan pairs).
    pub(super) slot_no: usize,
    /// With kernel CAN: the vxcan pairs in the container's namespace, one per bus.
    pub(super) vxcan: Vec<VxcanPlan>,
    /// With kernel CAN: the bridges from the host ends of the pairs to the current scenario's hubs.
    pub(super) bridges: Vec<CanBridge>,
}

/// The idle resident containers of a run, by spec key.
pub(super) struct Pool {
    reuse: bool,
    idle: Mutex<HashMap<String, Vec<Resident>>>,
}

impl Pool {
    /// An empty pool; with `reuse` off it never hands out or keeps a container.
    pub(super) fn new(reuse: bool) -> Pool {
        Pool {
            reuse,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// An idle container with spec key `key`, if reuse is on and there is one.
    pub(super) fn take(&self, key: &str) -> Option<Resident> {
        if !self.reuse {
            return None;
        }
        self.idle.lock().ok()?.get_mut(key)?.pop()
    }

    /// Keeps a container whose workload ended cleanly for the next scenario with the same key; with reuse
    /// off it is dropped, which removes it (forced).
    pub(super) fn keep(&self, key: &str, resident: Resident) {
        if self.reuse {
            if let Ok(mut idle) = self.idle.lock() {
                idle.entry(key.to_string()).or_default().push(resident);
                return;
            }
        }
        // Dropping a ContainerAsync removes the container (forced).
        drop(resident);
    }

    /// Empties the pool (at the end of the run).
    pub(super) fn drain(&self) -> Vec<Resident> {
        match self.idle.lock() {
            Ok(mut idle) => idle.drain().flat_map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Containers with the same key are interchangeable between scenarios.
pub(super) fn spec_key(
    image: &str,
    cmd: &[String],
    spec: &ContainerSpec,
    links: &[(String, PathBuf)],
    mounts: &[HostMount],
) -> String {
    let mut env = spec.env.clone();
    env.sort();
    let buses: Vec<&str> = links.iter().map(|(b, _)| b.as_str()).collect();
    format!(
        "{image}|{cmd:?}|{env:?}|{:?}|{:?}|{buses:?}|{:?}|{mounts:?}",
        spec.limits.memory_bytes, spec.limits.cpu_millis, spec.security
    )
}

/// The one container spec fixture of the container environment's tests.
#[cfg(test)]
pub(super) mod fixtures {
    use crate::manifest::{ContainerSpec, ImageRef};

    /// A container spec of image `agl/x:1` with environment `env`.
    pub(crate) fn spec(env: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            name: "c".into(),
            image: ImageRef {
                repository: "agl/x".into(),
                tag: "1".into(),
            },
            command: vec![],
            args: vec![],
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            limits: Default::default(),
            requests: Default::default(),
            readiness: None,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::spec;
    use super::*;

    #[test]
    fn spec_keys_separate_different_containers() {
        let links = vec![("vehicle".to_string(), PathBuf::from("/s/a.sock"))];
        let other_links = vec![("vehicle".to_string(), PathBuf::from("/s/b.sock"))];
        let a = spec_key("img:1", &[], &spec(&[("A", "1"), ("B", "2")]), &links, &[]);
        let b = spec_key("img:1", &[], &spec(&[("B", "2"), ("A", "1")]), &other_links, &[]);
        assert_eq!(a, b, "env order and socket location do not matter");
        assert_ne!(a, spec_key("img:1", &[], &spec(&[("A", "2")]), &links, &[]));
        assert_ne!(
            a,
            spec_key("img:2", &[], &spec(&[("A", "1"), ("B", "2")]), &links, &[])
        );
    }
}
