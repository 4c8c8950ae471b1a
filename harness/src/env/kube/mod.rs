//! The kube environment: a real Kubernetes-manifest runtime, `podman kube play`, owns the workload's life.
//!
//! Every other environment runs a manifest through the harness's own supervisor; here podman does what a
//! kubelet would, and the harness only observes it ([`observe`]) and passes the scenario's lifecycle steps on,
//! so parity compares the harness's reading of Kubernetes with an orchestrator's. Eclipse Ankaios's
//! `podman-kube` runtime and Red Hat's in-vehicle stack run Pod and Deployment YAML exactly this way.
//!
//! * **Deploy**: each scenario's workload document, as the manifest has it, with only the wiring a device
//!   plugin and a namespace would add ([`play`]): a name suffix per scenario, the run's labels, the bus
//!   (hub sockets by `hostPath`, `CAN_BUS` variables, emulated SocketCAN through `pod-init --can-emulate`
//!   in front of the command line), preloaded images. Played with `podman kube play`.
//! * **Images** are put in podman's own store ([`image`]): the same FROM-scratch images as the container
//!   environment's, or the project's container images.
//! * **Owned by podman**: restart policy, init containers, replicas (a Deployment of n replicas is n pods,
//!   `<name>-pod-<i>`), liveness probes (podman's healthchecks). **Observed**: state and restart counts
//!   (`podman events`, `podman inspect`), logs (conmon's k8s-file). **Mapped**: `stop` = `podman stop -t
//!   <grace>`, `kill` = SIGKILL to the container's process, `restart` = `podman stop` + `podman start`. Readiness is the
//!   harness's observation, as everywhere (CAN heartbeat, or the readiness probe through `podman exec`:
//!   podman 4.3 ignores `readinessProbe`).
//! * **Where podman differs from Kubernetes** is listed by [`KubeEnv::notes`] and shown in every report with
//!   the environment; restart counts that differ from the other columns are reported per scenario.
//! * **Cleanup**: every pod and container carries `agl.parity.run=<run-id>` and the state root's label; a
//!   scenario's pods are removed at its end (`podman pod stop`, `podman pod rm -f`) with the volumes podman
//!   made of its ConfigMaps and the Secrets it created (both named with the scenario's suffix), and
//!   [`kind`]'s sweep removes all three for runs that are gone.
//!
//! Podman gets its configuration through `CONTAINERS_CONF` ([`podman`]), never the system's files. Its
//! pause image needs `catatonit` (Debian: `apt-get install podman catatonit`).
//!
//! # Towards a real cluster (not built: no cluster here to run it against)
//!
//! The same module points at a cluster by replacing the podman calls, not the model: deploy with
//! `kubectl apply -f` of the same wired YAML (or kube-rs `Api::<Pod>::create` with the user's kubeconfig)
//! into a namespace per scenario instead of the name suffix; observe with a watch on the pods
//! (`status.containerStatuses[].restartCount`, `state`, `lastState.terminated.exitCode`) instead of podman
//! events; logs from `kubectl logs -f --prefix` or the pods/log API; `kill` by `kubectl exec … kill -9 1`
//! or an ephemeral debug container; `stop` by scaling to zero (Kubernetes has no stop). On k3s on a
//! board, CAN comes from the node: the `k8s-socketcan` device plugin hands `vcan`/`can` interfaces to pods
//! that request the `k8s.v1.cni.cncf.io/socketcan` resource, so the wiring becomes a resource request and
//! `CAN_BUS=socketcan:<if>` instead of the socket mount. The nightly matrix would scale out as Kubernetes
//! Jobs: one Job per (column, feature shard) running `agl-parity run --env <column> --shard i/n`, each
//! writing its report to a volume or object store, and `agl-parity merge` joining them.

mod image;
mod observe;
mod play;
mod podman;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::contract::{
    bus_env, no_preflight, single_column, DeployRequest, EnvKind, Environment, Instance, ProbeFailure,
    RunContext, Setup, Transport,
};
use super::socketcan::{resolve, CanTransport, Offer, EMULATED};
use crate::cleanup::RUN_MARKER_ENV;
use crate::error::InfraError;
use crate::logs::LogSink;
use crate::manifest::{Enforcement, WorkloadSpec};
use image::PodmanImages;
use observe::{EventStream, Played, PlayedPods, PodmanContainer};
use play::{BusMount, PlayError, Wiring, POD_INIT_PATH};
pub use podman::{Podman, PodmanError};

/// Label carrying the run id on every pod and container of a run (the container environment's name).
pub const RUN_LABEL: &str = "agl.parity.run";
/// Label carrying the state root of the harness that owns the run.
pub const STATE_LABEL: &str = "agl.parity.state";
/// Where the hub sockets appear in the containers.
const BUS_MOUNT: &str = "/run/agl-parity";
/// How long `podman kube play` may take.
const PLAY_TIMEOUT: Duration = Duration::from_secs(120);

const HOW_TO_INSTALL: &str =
    "install podman and its pause-image helper: `apt-get install -y podman catatonit`";

/// Registry entry.
pub fn kind() -> EnvKind {
    EnvKind {
        name: "kube",
        summary: "the manifest played by podman (`podman kube play`): podman owns restarts, init containers, replicas and probes",
        probe: || Box::pin(probe()),
        columns: single_column,
        create: |_column, run, _setup| Ok(Arc::new(KubeEnv::new(run)?)),
        sweep: sweep_entry,
        preflight: no_preflight,
    }
}

fn sweep_entry(live: Vec<String>, _setup: Setup<'_>) -> futures::future::BoxFuture<'_, Vec<String>> {
    Box::pin(sweep(live))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodmanInfo {
    #[serde(default)]
    host: InfoHost,
    #[serde(default)]
    version: InfoVersion,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InfoHost {
    #[serde(default, rename = "ociRuntime")]
    oci_runtime: InfoRuntime,
    #[serde(default)]
    cgroup_version: String,
    #[serde(default)]
    event_logger: String,
}

#[derive(serde::Deserialize, Default)]
struct InfoRuntime {
    #[serde(default)]
    name: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InfoVersion {
    #[serde(default)]
    version: String,
}

/// Where podman finds `catatonit` for its pause image.
const CATATONIT: &[&str] = &[
    "/usr/libexec/podman/catatonit",
    "/usr/bin/catatonit",
    "/usr/local/bin/catatonit",
];

/// Whether podman is installed and works here, and which.
pub async fn probe() -> Result<String, ProbeFailure> {
    let podman = Podman::new(&crate::cleanup::state_root()).map_err(|e| ProbeFailure::new(e.to_string()))?;
    podman_info(&podman).await.map(|(line, _)| line)
}

/// What `podman info` says, as a line for `doctor`, and podman's version.
async fn podman_info(podman: &Podman) -> Result<(String, PodmanVersion), ProbeFailure> {
    let info: PodmanInfo = podman
        .json(&["info", "--format", "json"], "info JSON")
        .await
        .map_err(|e| {
            ProbeFailure::new(match e {
                PodmanError::Spawn(_) => format!("no podman: {HOW_TO_INSTALL}"),
                other => format!("podman does not work here: {other}"),
            })
        })?;
    if !CATATONIT.iter().any(|p| Path::new(p).exists()) {
        return Err(ProbeFailure::new(format!(
            "podman {} cannot build its pause image (\"finding pause binary\"): no catatonit; {HOW_TO_INSTALL}",
            info.version.version
        )));
    }
    let conf = podman
        .conf()
        .map(|c| format!("CONTAINERS_CONF {} (default_ulimits = [])", c.display()))
        .unwrap_or_else(|| "the caller's CONTAINERS_CONF".into());
    let line = format!(
        "podman {} ({}, cgroups {}, events: {}), `podman kube play`; {conf}",
        info.version.version, info.host.oci_runtime.name, info.host.cgroup_version, info.host.event_logger
    );
    Ok((line, PodmanVersion::parse(&info.version.version)))
}

/// Podman's `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PodmanVersion(pub u32, pub u32);

impl PodmanVersion {
    fn parse(text: &str) -> PodmanVersion {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        PodmanVersion(parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
}

/// Why podman `version` cannot play `pod` as Kubernetes would, when a known podman defect or missing
/// feature stands in the way: the scenario is then *unsupported here*, with this reason.
pub fn known_limit(pod: &WorkloadSpec, version: PodmanVersion) -> Option<String> {
    if let Some(sidecar) = pod.init_containers.iter().find(|c| c.sidecar) {
        return Some(format!(
            "podman has no native sidecars: it runs init container `{}` (restartPolicy: Always) as an ordinary init container and waits for it to finish",
            sidecar.name
        ));
    }
    if version < PodmanVersion(4, 4)
        && pod.restart_policy == crate::manifest::RestartPolicy::Always
        && !pod.init_containers.is_empty()
    {
        return Some(format!(
            "podman {}.{} applies the pod's restartPolicy: Always to its init containers and restarts them until a 20 s timeout, then may fail the play (containers/podman#15631, fixed in 4.4)",
            version.0, version.1
        ));
    }
    None
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PodListed {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Removes pods of runs that are not alive (this state root's only), and the Secrets their plays made.
pub async fn sweep(live: Vec<String>) -> Vec<String> {
    let Ok(podman) = Podman::new(&crate::cleanup::state_root()) else {
        return Vec::new();
    };
    let root = crate::cleanup::state_root().display().to_string();
    let label = format!("label={RUN_LABEL}");
    let Ok(pods) = podman
        .json::<Vec<PodListed>>(
            &["pod", "ps", "--format", "json", "--filter", &label],
            "pod list JSON",
        )
        .await
    else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    let mut runs_with_pods = Vec::new();
    for pod in pods {
        let labels = pod.labels.unwrap_or_default();
        let run = labels.get(RUN_LABEL).cloned().unwrap_or_default();
        runs_with_pods.push(run.clone());
        if live.contains(&run) || labels.get(STATE_LABEL) != Some(&root) {
            continue;
        }
        if podman
            .run(&["pod", "rm", "--force", "--time", "0", &pod.name])
            .await
            .is_ok()
        {
            removed.push(format!("removed podman pod {} of run {run}", pod.name));
        }
    }
    // The Secrets and ConfigMap volumes plays made carry their run in their names; a run whose pods are
    // still there (another state root's live run) keeps them.
    for kind in ["secret", "volume"] {
        let Ok(names) = podman.run(&[kind, "ls", "--format", "{{.Name}}"]).await else {
            continue;
        };
        for name in names.lines().map(str::trim) {
            let Some(run) = suffixed_run(name) else { continue };
            if live.iter().any(|l| l == run) || runs_with_pods.iter().any(|r| r == run) {
                continue;
            }
            if podman.run(&[kind, "rm", "--force", name]).await.is_ok() {
                removed.push(format!("removed podman {kind} {name} of run {run}"));
            }
        }
    }
    removed
}

/// The run id in the name of a Secret or ConfigMap volume a play made (`<name>-<run id>-s<n>`).
fn suffixed_run(name: &str) -> Option<&str> {
    let re = regex::Regex::new(r"-(\d{8}-\d{6}-[0-9a-f]{4})-s\d+$").ok()?;
    re.captures(name).and_then(|c| c.get(1)).map(|m| m.as_str())
}

/// How CAN reaches the played containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KubeCan {
    /// `pod-init --can-emulate` in front of the command line: plain SocketCAN on the hub sockets.
    Emulated,
    /// The hub sockets only, `CAN_BUS=unix:…` (workloads that speak the hub protocol).
    SocketMount,
}

/// How a pod reaches its buses in its containers.
struct BusWiring {
    /// The hub socket directories, as `hostPath` volumes.
    mounts: Vec<BusMount>,
    /// `CAN_BUS` and `CAN_BUS_<NAME>`.
    env: Vec<(String, String)>,
    /// With emulated SocketCAN, the words before each command line; empty otherwise.
    prefix: Vec<String>,
}

/// The kube environment of one run.
pub struct KubeEnv {
    podman: Podman,
    can: KubeCan,
    images: PodmanImages,
    events: tokio::sync::OnceCell<Arc<EventStream>>,
    /// Podman's version, read by `prepare`.
    version: std::sync::OnceLock<PodmanVersion>,
    scenarios: AtomicUsize,
    state_root: PathBuf,
}

impl KubeEnv {
    fn new(run: &RunContext) -> Result<KubeEnv, InfraError> {
        let unavailable = |reason: String| InfraError::Unavailable {
            env: "kube".into(),
            reason,
        };
        let state_root = crate::cleanup::state_root();
        let podman = Podman::new(&state_root).map_err(|e| unavailable(e.to_string()))?;
        let can =
            match resolve(run.can_transport, &Offer::here(false)).map_err(|e| unavailable(e.to_string()))? {
                CanTransport::Hub => KubeCan::SocketMount,
                _ => KubeCan::Emulated,
            };
        Ok(KubeEnv {
            podman,
            can,
            images: PodmanImages::new(),
            events: tokio::sync::OnceCell::new(),
            version: std::sync::OnceLock::new(),
            scenarios: AtomicUsize::new(0),
            state_root,
        })
    }

    async fn events(&self, run: &RunContext) -> Result<Arc<EventStream>, InfraError> {
        self.events
            .get_or_try_init(|| async {
                EventStream::start(&self.podman, RUN_LABEL, &run.run_id).map(Arc::new)
            })
            .await
            .cloned()
    }

    /// The bus wiring of a pod: mounts, variables and (emulated) the words before each command line.
    fn bus_wiring(&self, pod: &WorkloadSpec, links: &[(String, PathBuf)]) -> Result<BusWiring, InfraError> {
        let mut mounts: Vec<BusMount> = Vec::new();
        let mut endpoints = Vec::new();
        let mut emulated = Vec::new();
        for (bus, socket) in links {
            let bus_err = |reason: String| InfraError::Bus {
                bus: bus.clone(),
                reason,
            };
            let dir = socket
                .parent()
                .ok_or_else(|| bus_err(format!("{}: no directory", socket.display())))?;
            let file = socket
                .file_name()
                .ok_or_else(|| bus_err(format!("{}: no file name", socket.display())))?
                .to_string_lossy()
                .to_string();
            let index = match mounts.iter().position(|m| m.host_dir == dir) {
                Some(i) => i,
                None => {
                    mounts.push(BusMount {
                        host_dir: dir.to_path_buf(),
                        mount_path: format!("{BUS_MOUNT}/bus-{}", mounts.len()),
                    });
                    mounts.len() - 1
                }
            };
            let inside = format!("{}/{file}", mounts[index].mount_path);
            match self.can {
                KubeCan::Emulated => {
                    let interface = pod.interface_of(bus);
                    emulated.push(format!("{interface}=unix:{inside}"));
                    endpoints.push((bus.clone(), format!("socketcan:{interface}")));
                }
                KubeCan::SocketMount => endpoints.push((bus.clone(), format!("unix:{inside}"))),
            }
        }
        let prefix = if emulated.is_empty() {
            Vec::new()
        } else {
            vec![
                POD_INIT_PATH.to_string(),
                "--can-emulate".into(),
                emulated.join(","),
                "--".into(),
            ]
        };
        Ok(BusWiring {
            mounts,
            env: bus_env(&endpoints),
            prefix,
        })
    }

    /// The names podman gives the pods of a played workload.
    fn pod_names(pod: &WorkloadSpec, suffix: &str) -> Vec<String> {
        if pod.kind == "Pod" {
            vec![format!("{}{suffix}", pod.name)]
        } else {
            (0..pod.replicas.max(1))
                .map(|i| format!("{}{suffix}-pod-{i}", pod.name))
                .collect()
        }
    }
}

#[async_trait]
impl Environment for KubeEnv {
    fn name(&self) -> &str {
        "kube"
    }

    fn transport(&self) -> Transport {
        match self.can {
            KubeCan::Emulated => format!("{EMULATED} (pod-init --can-emulate in each played container)"),
            KubeCan::SocketMount => "userspace hub, Unix socket by hostPath volume".into(),
        }
    }

    /// cgroup limits, user, read-only root and volumes, as podman applies them.
    fn enforces(&self) -> Vec<Enforcement> {
        crate::manifest::fields::enforced_by("kube")
    }

    fn orchestrates_pods(&self) -> bool {
        true
    }

    fn notes(&self) -> Vec<String> {
        let systemd = Path::new("/run/systemd/system").exists();
        let mut notes = vec![
            "restart back-off: podman restarts a crashed container at once, every time (Kubernetes waits 10 s, doubling to 5 min; the harness's supervisor 100 ms, doubling to 3.2 s), so a crash loop restarts far more often here; each restart goes through conmon, `podman container cleanup` and runc, so it takes longer than the harness's first back-off (the `restart <workload> by its policy` timing row of a scenario shows each column's figure)".to_string(),
            "terminationGracePeriodSeconds: podman 4.3's kube play does not apply it (its stop timeout stays 10 s); the scenario's stop and the teardown pass the manifest's grace to `podman stop`/`pod rm`".to_string(),
            "readinessProbe and startupProbe: podman 4.3 ignores them; readiness is observed by the harness (CAN heartbeat, or the readiness probe through `podman exec`)".to_string(),
            "replicas: a Deployment of n replicas is n pods `<name>-pod-<i>`, started together; nothing replaces a removed pod (no ReplicaSet controller)".to_string(),
            "kinds: podman 4.3 plays Pod and Deployment; StatefulSet, DaemonSet, ReplicaSet and Job are unsupported here".to_string(),
            "init containers: podman before 4.4 restarts them under the pod's restartPolicy: Always (containers/podman#15631); such pods, and pods with native sidecars (podman has none), are unsupported here".to_string(),
            "exit codes: podman reports a signal death as 128 + n; codes above 128 are read as signal n".to_string(),
        ];
        notes.push(if systemd {
            "livenessProbe: podman runs it as a healthcheck, through `/bin/sh -c` in the image (the exec command joined by spaces); a FROM-scratch image has no shell, so it fails and podman restarts the container".into()
        } else {
            "livenessProbe: podman makes it a healthcheck scheduled by a systemd timer; this machine has no systemd, so podman never runs it".into()
        });
        notes
    }

    async fn prepare(&self, run: &RunContext) -> Result<(), InfraError> {
        let (_, version) = podman_info(&self.podman)
            .await
            .map_err(|e| InfraError::Unavailable {
                env: "kube".into(),
                reason: e.reason,
            })?;
        let _ = self.version.set(version);
        self.events(run).await?;
        run.catalog.prepare().await?;
        if self.can == KubeCan::Emulated {
            crate::helpers::Helper::PodInit.path().await?;
        }
        Ok(())
    }

    /// Removes any pod of the run a teardown missed (a scenario cut short), and ends the event stream.
    async fn finish(&self, run: &RunContext) {
        let label = format!("label={RUN_LABEL}={}", run.run_id);
        if let Ok(ids) = self
            .podman
            .run(&["pod", "ps", "--quiet", "--filter", &label])
            .await
        {
            let ids: Vec<&str> = ids.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            if !ids.is_empty() {
                let mut args = vec!["pod", "rm", "--force", "--time", "0"];
                args.extend(ids);
                let _ = self.podman.run(&args).await;
            }
        }
    }

    async fn deploy(
        &self,
        run: &RunContext,
        request: DeployRequest<'_>,
    ) -> Result<Vec<Instance>, InfraError> {
        let pod = request.workload;
        let launch_err = |reason: String| InfraError::Launch {
            workload: pod.name.clone(),
            reason,
        };
        if let Some(reason) = known_limit(pod, self.version.get().copied().unwrap_or_default()) {
            return Err(InfraError::Unsupported {
                workload: pod.name.clone(),
                reason,
            });
        }
        let n = self.scenarios.fetch_add(1, Ordering::SeqCst);
        let suffix = format!("-{}-s{n}", run.run_id);
        let links = request.unix_sockets("kube")?;
        let BusWiring {
            mounts: bus_mounts,
            mut env,
            prefix,
        } = self.bus_wiring(pod, &links)?;
        env.push((RUN_MARKER_ENV.to_string(), run.run_id.clone()));
        let mut argv = BTreeMap::new();
        for container in pod.init_containers.iter().chain(&pod.containers) {
            let image = self.images.image_for(&self.podman, run, container).await?;
            argv.insert(container.name.clone(), image.argv);
        }
        let emulation = if prefix.is_empty() {
            None
        } else {
            Some((crate::helpers::Helper::PodInit.path().await?, prefix.clone()))
        };
        let wiring = Wiring {
            suffix: suffix.clone(),
            labels: vec![
                (RUN_LABEL.to_string(), run.run_id.clone()),
                (STATE_LABEL.to_string(), self.state_root.display().to_string()),
            ],
            bus_mounts,
            env,
            emulation,
            argv,
        };
        let (yaml, objects) = play::play_yaml(&pod.source, pod.document, &wiring).map_err(|e| match e {
            PlayError::Kind { .. } => InfraError::Unsupported {
                workload: pod.name.clone(),
                reason: e.to_string(),
            },
            other => InfraError::Manifest(other.to_string()),
        })?;
        std::fs::create_dir_all(request.scratch_dir).map_err(|e| launch_err(e.to_string()))?;
        let file = request.scratch_dir.join(format!("{}-play.yaml", pod.name));
        std::fs::write(&file, &yaml).map_err(|e| launch_err(format!("{}: {e}", file.display())))?;

        let events = self.events(run).await?;
        let pods = Self::pod_names(pod, &suffix);
        let mut received = Vec::new();
        for name in &pods {
            for container in &pod.containers {
                let container_name = format!("{name}-{}", container.name);
                received.push((container_name.clone(), events.subscribe(&container_name)));
            }
        }
        let containers = received.len() as u32;
        let played = Arc::new(PlayedPods::new(
            self.podman.clone(),
            pods.clone(),
            objects,
            containers,
        ));
        let file_arg = file.display().to_string();
        if let Err(e) = self
            .podman
            .run_within(&["kube", "play", &file_arg], PLAY_TIMEOUT)
            .await
        {
            played.remove(Duration::ZERO).await;
            return Err(launch_err(format!("podman kube play {}: {e}", file.display())));
        }
        let mut instances = Vec::new();
        let mut received = received.into_iter();
        for index in 0..pods.len() as u32 {
            let replica = pod.replica_name(index);
            let log_dir = request.log_dir.join(&replica);
            for container in &pod.containers {
                let Some((name, rx)) = received.next() else { break };
                let logs = LogSink::create(&container.name, &log_dir.join(format!("{}.log", container.name)))
                    .map_err(|e| launch_err(format!("log file: {e}")))?;
                let container_played = Played {
                    name,
                    policy: pod.restart_policy,
                    exec_prefix: prefix.clone(),
                    pods: played.clone(),
                };
                let followed = PodmanContainer::follow(
                    container_played,
                    self.podman.clone(),
                    events.clone(),
                    logs.clone(),
                    rx,
                )
                .await?;
                instances.push(Instance::observed(&replica, container, Arc::new(followed), logs));
            }
        }
        Ok(instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(restart: &str, init: &str) -> WorkloadSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod.yaml");
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    parity.agl.io/can-buses: vehicle\nspec:\n  restartPolicy: {restart}\n  initContainers:\n    - name: pre\n      image: agl/hello-static:1\n{init}  containers:\n    - name: app\n      image: agl/body-control:1.0\n"
        );
        std::fs::write(&path, yaml).unwrap();
        crate::manifest::load(&path).unwrap().remove(0)
    }

    #[test]
    fn podman_limits_are_named_for_the_pods_they_hit() {
        let always = pod("Always", "");
        let reason = known_limit(&always, PodmanVersion(4, 3)).expect("podman 4.3 and init containers");
        assert!(reason.contains("containers/podman#15631"), "{reason}");
        assert_eq!(known_limit(&always, PodmanVersion(4, 4)), None);
        assert_eq!(known_limit(&pod("OnFailure", ""), PodmanVersion(4, 3)), None);
        let sidecar = pod("OnFailure", "      restartPolicy: Always\n");
        let reason = known_limit(&sidecar, PodmanVersion(5, 0)).expect("a native sidecar");
        assert!(reason.contains("no native sidecars"), "{reason}");
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(PodmanVersion::parse("4.3.1"), PodmanVersion(4, 3));
        assert!(PodmanVersion::parse("4.3.1") < PodmanVersion(4, 4));
        assert!(PodmanVersion::parse("5.0.0-dev") > PodmanVersion(4, 4));
    }

    #[test]
    fn secrets_made_by_a_play_name_their_run() {
        assert_eq!(
            suffixed_run("db-key-20261201-153700-ab12-s3"),
            Some("20261201-153700-ab12")
        );
        assert_eq!(suffixed_run("db-key"), None);
    }
}
