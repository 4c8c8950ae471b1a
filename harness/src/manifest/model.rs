//! The workload model: what the environments deploy, read from Kubernetes objects by
//! [`super::kube`]. Types here carry no parsing; they sit below every user of the manifest module.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::fields::FieldUse;

/// Kubernetes restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited with `code` (None: killed by a signal) is restarted.
    pub fn restarts_after(self, code: Option<i32>) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != Some(0),
            RestartPolicy::Never => false,
        }
    }

    /// The policy of an init container of a pod with this policy: a sidecar always restarts; a
    /// run-to-completion container is retried while it fails, unless the pod never restarts anything.
    pub fn for_init_container(self, sidecar: bool) -> RestartPolicy {
        match (sidecar, self) {
            (true, _) => RestartPolicy::Always,
            (false, RestartPolicy::Never) => RestartPolicy::Never,
            (false, _) => RestartPolicy::OnFailure,
        }
    }

    /// Parses the Kubernetes spelling.
    pub fn parse(text: &str) -> Option<RestartPolicy> {
        match text {
            "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => None,
        }
    }
}

/// A container image reference, `repository[:tag]` or `repository@sha256:<hex>`.
///
/// A reference by digest keeps its digest in `tag` as `sha256-<hex>` (a valid local tag, which the
/// environments that build images tag them with); [`ImageRef::digest`] gives it back and `Display` writes
/// the reference as the manifest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// The last path component of the repository: the workload binary this image is built from.
    pub fn binary_name(&self) -> &str {
        self.repository.rsplit('/').next().unwrap_or(&self.repository)
    }

    /// `sha256:<hex>` (or `sha512:`) for a reference by digest.
    pub fn digest(&self) -> Option<String> {
        ["sha256", "sha512"].iter().find_map(|algorithm| {
            let hex = self.tag.strip_prefix(algorithm)?.strip_prefix('-')?;
            let len = if *algorithm == "sha256" { 64 } else { 128 };
            (hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| format!("{algorithm}:{hex}"))
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.digest() {
            Some(digest) => write!(f, "{}@{digest}", self.repository),
            None => write!(f, "{}:{}", self.repository, self.tag),
        }
    }
}

/// Resource quantities of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
}

/// An exec probe (readiness, liveness or startup) with Kubernetes' parameters and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecProbe {
    pub command: Vec<String>,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

/// Where a volume's files appear in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The pod volume's name.
    pub volume: String,
    /// Absolute path inside the container.
    pub path: String,
    /// Only this file or directory of the volume (`subPath`).
    pub sub_path: Option<String>,
    pub read_only: bool,
}

/// What a pod volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// Files from a ConfigMap or Secret: relative path → contents, and the file mode.
    Files {
        files: BTreeMap<String, Vec<u8>>,
        mode: u32,
    },
    /// An empty directory shared by the pod's containers.
    EmptyDir,
}

/// One volume of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub source: VolumeSource,
}

/// User and filesystem settings of a container (pod `securityContext` merged with the container's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecuritySpec {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: bool,
    pub read_only_root: bool,
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: ImageRef,
    /// Entrypoint override; empty = the image's entrypoint (the workload binary).
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// The container's environment: `env` (with `valueFrom` resolved) over `envFrom`, in Kubernetes order.
    pub env: Vec<(String, String)>,
    pub limits: Resources,
    pub requests: Resources,
    pub readiness: Option<ExecProbe>,
    /// Restarts the container when it fails `failure_threshold` times in a row.
    pub liveness: Option<ExecProbe>,
    /// Gates readiness and liveness until it passes once; failing it restarts the container.
    pub startup: Option<ExecProbe>,
    pub mounts: Vec<VolumeMount>,
    pub security: SecuritySpec,
    /// An init container with `restartPolicy: Always`: a native sidecar, started in the init sequence and
    /// kept running beside the app containers.
    pub sidecar: bool,
    /// Where the manifest defines this container, for errors about its fields found later (an image no
    /// source provides, a `command[0]` the image does not hold): `<file>: document <n>:
    /// spec.template.spec.containers[<i>]`; the field name follows after a `.`.
    pub location: String,
}

/// How readiness of a pod is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready as soon as every container is running.
    Started,
    /// Ready once a frame with this Linux `can_id` is seen on the pod's first bus.
    CanFrame(u32),
    /// Ready once every container's exec probe passes.
    Exec,
}

/// A pod to deploy: what a workload object (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job)
/// describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// `metadata.name` of the object.
    pub name: String,
    /// The manifest file and document it came from.
    pub source: PathBuf,
    pub document: usize,
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    pub buses: Vec<String>,
    /// The SocketCAN interface name of each bus, in the same order (`can0`, `can1`, ... unless the
    /// `parity.agl.io/can-interfaces` annotation names them, or a `k8s.collabora.com/socketcan-<bus>` device
    /// request makes an interface named like its bus).
    pub interfaces: Vec<String>,
    pub readiness: Readiness,
    pub restart_policy: RestartPolicy,
    pub termination_grace: Duration,
    /// Pods of this workload on the bus at once (`spec.replicas`; 1 for a Pod, Job or DaemonSet).
    pub replicas: u32,
    /// Run to completion one after another before the app containers start; sidecars among them keep
    /// running.
    pub init_containers: Vec<ContainerSpec>,
    pub containers: Vec<ContainerSpec>,
    pub volumes: Vec<VolumeSpec>,
    /// Every field the document sets, with what the framework does with it.
    pub fields: Vec<FieldUse>,
}

impl WorkloadSpec {
    /// The SocketCAN interface the workload sees for `bus` (`can<i>` for a bus it does not list).
    pub fn interface_of(&self, bus: &str) -> String {
        let i = self.buses.iter().position(|b| b == bus);
        i.and_then(|i| self.interfaces.get(i).cloned())
            .unwrap_or_else(|| format!("can{}", i.unwrap_or(0)))
    }

    /// The name of replica `index`: the workload's own name for a single replica, `<name>-<index>` otherwise
    /// (a StatefulSet's naming, stable across environments).
    pub fn replica_name(&self, index: u32) -> String {
        if self.replicas <= 1 {
            self.name.clone()
        } else {
            format!("{}-{index}", self.name)
        }
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&VolumeSpec> {
        self.volumes.iter().find(|v| v.name == name)
    }
}

/// A Kubernetes object of a manifest file that no environment deploys (Service, Namespace, ...): listed in
/// the report so nothing is dropped without a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub source: PathBuf,
    pub document: usize,
}
