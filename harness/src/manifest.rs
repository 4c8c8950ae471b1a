//! Kubernetes manifests (what cdk8s synthesizes and k3s applies) read into the workload model.
//!
//! A manifest file holds one or more YAML documents, each a `v1/Pod` or an `apps/v1/Deployment`. The subset
//! of the Kubernetes schema the framework acts on is modelled with `deny_unknown_fields`, so a field the
//! framework does not support is an error naming the file, the document and the field path
//! (`spec.template.spec.containers[0].livenessProbe`), never silently ignored.
//!
//! CAN wiring is declared with annotations, which keeps the YAML valid Kubernetes:
//!
//! | annotation | meaning |
//! |---|---|
//! | `parity.agl.io/can-buses` | comma-separated names of the CAN buses the pod joins (required) |
//! | `parity.agl.io/ready-frame` | readiness: the pod is ready once a frame with this id (hex) is seen on its bus |
//!
//! The first bus reaches each container as `CAN_BUS=<endpoint>`, every bus as `CAN_BUS_<NAME>=<endpoint>`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Annotation naming the CAN buses a pod joins.
pub const ANNOTATION_BUSES: &str = "parity.agl.io/can-buses";
/// Annotation giving a CAN-heartbeat readiness probe.
pub const ANNOTATION_READY_FRAME: &str = "parity.agl.io/ready-frame";
const ANNOTATION_PREFIX: &str = "parity.agl.io/";
const KNOWN_ANNOTATIONS: &[&str] = &[ANNOTATION_BUSES, ANNOTATION_READY_FRAME];

/// A manifest that cannot be used, with the place that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: document {doc}: {field}: {reason}")]
    Field {
        path: PathBuf,
        doc: usize,
        field: String,
        reason: String,
    },
    #[error("{path}: no Pod or Deployment in the file")]
    Empty { path: PathBuf },
}

/// Kubernetes restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
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
}

/// A container image reference, `repository[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// The last path component of the repository: the workload binary this image is built from.
    pub fn binary_name(&self) -> &str {
        self.repository.rsplit('/').next().unwrap_or(&self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// Resource quantities of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
}

/// An exec readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecProbe {
    pub command: Vec<String>,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: ImageRef,
    /// Entrypoint override; empty = the image's entrypoint (the workload binary).
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub limits: Resources,
    pub requests: Resources,
    pub readiness: Option<ExecProbe>,
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

/// A pod to deploy: what a manifest document describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// `metadata.name` of the Pod or Deployment.
    pub name: String,
    /// The manifest file and document it came from.
    pub source: PathBuf,
    pub document: usize,
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    pub buses: Vec<String>,
    pub readiness: Readiness,
    pub restart_policy: RestartPolicy,
    pub termination_grace: Duration,
    pub containers: Vec<ContainerSpec>,
}

// ---- The Kubernetes subset, as serde sees it. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: serde_yaml::Value,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    #[serde(rename = "namespace")]
    _namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeploymentSpec {
    replicas: Option<u32>,
    selector: Option<Selector>,
    template: PodTemplate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodTemplate {
    #[serde(default)]
    metadata: Metadata,
    spec: PodSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodSpec {
    containers: Vec<Container>,
    restart_policy: Option<RestartPolicy>,
    termination_grace_period_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    /// Accepted for compatibility; images are always local builds.
    #[serde(rename = "imagePullPolicy")]
    _image_pull_policy: Option<PullPolicy>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    resources: Option<ResourceRequirements>,
    readiness_probe: Option<Probe>,
}

#[derive(Deserialize)]
#[allow(dead_code)] // validated by serde, not acted on
enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceRequirements {
    #[serde(default)]
    limits: BTreeMap<String, Quantity>,
    #[serde(default)]
    requests: BTreeMap<String, Quantity>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Quantity {
    Number(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Probe {
    exec: ExecAction,
    initial_delay_seconds: Option<u64>,
    period_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecAction {
    command: Vec<String>,
}

/// Reads every Pod and Deployment of a manifest file.
pub fn load(path: &Path) -> Result<Vec<WorkloadSpec>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses manifest text; `path` names the source in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<WorkloadSpec>, ManifestError> {
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = index + 1;
        let value =
            serde_yaml::Value::deserialize(de).map_err(|e| field_error(path, doc, "(document)", &e))?;
        if value.is_null() {
            continue; // an empty document between `---` separators
        }
        let document: Document = serde_path_to_error::deserialize(value)
            .map_err(|e| field_error(path, doc, &e.path().to_string(), e.inner()))?;
        out.push(convert(document, path, doc)?);
    }
    if out.is_empty() {
        return Err(ManifestError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn field_error(path: &Path, doc: usize, field: &str, reason: &dyn fmt::Display) -> ManifestError {
    let field = if field == "." || field.is_empty() {
        "(document)"
    } else {
        field
    };
    ManifestError::Field {
        path: path.to_path_buf(),
        doc,
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

fn convert(document: Document, path: &Path, doc: usize) -> Result<WorkloadSpec, ManifestError> {
    let err = |field: &str, reason: String| ManifestError::Field {
        path: path.to_path_buf(),
        doc,
        field: field.to_string(),
        reason,
    };
    let (prefix, pod_meta, pod_spec, default_policy) =
        match (document.api_version.as_str(), document.kind.as_str()) {
            ("v1", "Pod") => {
                let spec: PodSpec = from_value(document.spec, path, doc, "spec")?;
                ("spec", document.metadata.clone(), spec, RestartPolicy::Always)
            }
            ("apps/v1", "Deployment") => {
                let spec: DeploymentSpec = from_value(document.spec, path, doc, "spec")?;
                if let Some(replicas) = spec.replicas {
                    if replicas != 1 {
                        return Err(err(
                            "spec.replicas",
                            format!("{replicas} replicas requested; only 1 is supported"),
                        ));
                    }
                }
                if let Some(selector) = &spec.selector {
                    for (k, v) in &selector.match_labels {
                        if spec.template.metadata.labels.get(k) != Some(v) {
                            return Err(err(
                                "spec.selector.matchLabels",
                                format!("label `{k}: {v}` is not set on spec.template.metadata.labels"),
                            ));
                        }
                    }
                }
                if matches!(spec.template.spec.restart_policy, Some(p) if p != RestartPolicy::Always) {
                    return Err(err(
                        "spec.template.spec.restartPolicy",
                        "a Deployment's pods must use restartPolicy Always".into(),
                    ));
                }
                let mut meta = spec.template.metadata;
                // A Deployment's own annotations apply to its pod unless the template overrides them.
                for (k, v) in document.metadata.annotations.iter() {
                    meta.annotations.entry(k.clone()).or_insert_with(|| v.clone());
                }
                (
                    "spec.template.spec",
                    meta,
                    spec.template.spec,
                    RestartPolicy::Always,
                )
            }
            (api, kind @ ("Pod" | "Deployment")) => {
                return Err(err(
                    "apiVersion",
                    format!("`{api}` is not the API version of a {kind}"),
                ));
            }
            (_, kind) => {
                return Err(err(
                    "kind",
                    format!("`{kind}` is not supported (supported: Pod, Deployment)"),
                ));
            }
        };
    let name = document
        .metadata
        .name
        .clone()
        .ok_or_else(|| err("metadata.name", "required".into()))?;
    check_name(&name).map_err(|r| err("metadata.name", r.to_string()))?;

    let annotations = &pod_meta.annotations;
    for key in annotations.keys() {
        if key.starts_with(ANNOTATION_PREFIX) && !KNOWN_ANNOTATIONS.contains(&key.as_str()) {
            return Err(err(
                &format!("metadata.annotations.{key}"),
                format!("unknown annotation (supported: {})", KNOWN_ANNOTATIONS.join(", ")),
            ));
        }
    }
    let buses_field = format!("metadata.annotations.{ANNOTATION_BUSES}");
    let buses: Vec<String> = annotations
        .get(ANNOTATION_BUSES)
        .ok_or_else(|| {
            err(
                &buses_field,
                "required: name the CAN bus(es) this workload joins".into(),
            )
        })?
        .split(',')
        .map(|b| b.trim().to_string())
        .collect();
    for bus in &buses {
        check_name(bus).map_err(|r| err(&buses_field, format!("bus name `{bus}`: {r}")))?;
    }

    if pod_spec.containers.is_empty() {
        return Err(err(
            &format!("{prefix}.containers"),
            "at least one container is required".into(),
        ));
    }
    let mut containers = Vec::new();
    for (i, c) in pod_spec.containers.into_iter().enumerate() {
        containers.push(convert_container(c, &format!("{prefix}.containers[{i}]"), &err)?);
    }
    let mut names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(
            &format!("{prefix}.containers"),
            format!("container name `{}` is used twice", dup[0]),
        ));
    }

    let ready_frame = match annotations.get(ANNOTATION_READY_FRAME) {
        Some(text) => Some(parse_can_id(text).map_err(|r| {
            err(
                &format!("metadata.annotations.{ANNOTATION_READY_FRAME}"),
                r.to_string(),
            )
        })?),
        None => None,
    };
    let has_exec = containers.iter().any(|c| c.readiness.is_some());
    let readiness = match (ready_frame, has_exec) {
        (Some(_), true) => {
            return Err(err(
                &format!("metadata.annotations.{ANNOTATION_READY_FRAME}"),
                "give either a CAN readiness frame or exec readinessProbes, not both".into(),
            ))
        }
        (Some(id), false) => Readiness::CanFrame(id),
        (None, true) => Readiness::Exec,
        (None, false) => Readiness::Started,
    };

    Ok(WorkloadSpec {
        name,
        source: path.to_path_buf(),
        document: doc,
        kind: document.kind,
        labels: pod_meta.labels,
        buses,
        readiness,
        restart_policy: pod_spec.restart_policy.unwrap_or(default_policy),
        termination_grace: Duration::from_secs(pod_spec.termination_grace_period_seconds.unwrap_or(5)),
        containers,
    })
}

fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    path: &Path,
    doc: usize,
    prefix: &str,
) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = if inner == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        field_error(path, doc, &field, e.inner())
    })
}

fn convert_container(
    c: Container,
    field: &str,
    err: &dyn Fn(&str, String) -> ManifestError,
) -> Result<ContainerSpec, ManifestError> {
    check_name(&c.name).map_err(|r| err(&format!("{field}.name"), r.to_string()))?;
    let image = parse_image(&c.image).map_err(|r| err(&format!("{field}.image"), r.to_string()))?;
    let mut env = Vec::new();
    for (i, var) in c.env.into_iter().enumerate() {
        if var.name.is_empty() || var.name.contains('=') {
            return Err(err(
                &format!("{field}.env[{i}].name"),
                format!("`{}` is not a valid variable name", var.name),
            ));
        }
        if var.name.starts_with("CAN_BUS") {
            return Err(err(
                &format!("{field}.env[{i}].name"),
                "CAN_BUS* variables are set by the framework from the parity.agl.io/can-buses annotation"
                    .into(),
            ));
        }
        env.push((var.name, var.value));
    }
    let (limits, requests) = match c.resources {
        Some(r) => (
            resources(&r.limits, &format!("{field}.resources.limits"), err)?,
            resources(&r.requests, &format!("{field}.resources.requests"), err)?,
        ),
        None => (Resources::default(), Resources::default()),
    };
    if let (Some(req), Some(lim)) = (requests.memory_bytes, limits.memory_bytes) {
        if req > lim {
            return Err(err(
                &format!("{field}.resources.requests.memory"),
                "request exceeds the limit".into(),
            ));
        }
    }
    let readiness = match c.readiness_probe {
        Some(p) => {
            if p.exec.command.is_empty() {
                return Err(err(
                    &format!("{field}.readinessProbe.exec.command"),
                    "must not be empty".into(),
                ));
            }
            Some(ExecProbe {
                command: p.exec.command,
                initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0)),
                period: Duration::from_secs(p.period_seconds.unwrap_or(10).max(1)),
                timeout: Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1)),
                failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
                success_threshold: p.success_threshold.unwrap_or(1).max(1),
            })
        }
        None => None,
    };
    Ok(ContainerSpec {
        name: c.name,
        image,
        command: c.command,
        args: c.args,
        env,
        limits,
        requests,
        readiness,
    })
}

fn resources(
    map: &BTreeMap<String, Quantity>,
    field: &str,
    err: &dyn Fn(&str, String) -> ManifestError,
) -> Result<Resources, ManifestError> {
    let mut out = Resources::default();
    for (key, quantity) in map {
        let text = match quantity {
            Quantity::Number(n) => n.to_string(),
            Quantity::Text(t) => t.clone(),
        };
        let here = format!("{field}.{key}");
        match key.as_str() {
            "memory" => out.memory_bytes = Some(parse_memory(&text).map_err(|r| err(&here, r.to_string()))?),
            "cpu" => out.cpu_millis = Some(parse_cpu(&text).map_err(|r| err(&here, r.to_string()))?),
            other => {
                return Err(err(
                    &here,
                    format!("resource `{other}` is not supported (supported: cpu, memory)"),
                ))
            }
        }
    }
    Ok(out)
}

/// Why one manifest value (a quantity, a CAN id, an image reference, a name) is not valid; the caller adds
/// the file and field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{0}` is not a memory quantity (e.g. 64Mi, 1G)")]
    NotMemory(String),
    #[error("`{0}` must be a positive quantity")]
    NotPositive(String),
    #[error("`{0}` is not a CPU quantity (e.g. 500m, 0.5, 2)")]
    NotCpu(String),
    #[error("`{0}` must be more than 0")]
    Zero(String),
    #[error("`{0}` is not a hex CAN id")]
    NotCanId(String),
    #[error("{0}")]
    CanIdRange(String),
    #[error("`{0}` is not an image reference")]
    NotImage(String),
    #[error("digest references are not supported: images are built locally (use repository:tag)")]
    Digest,
    #[error("`{0}` is not a valid name (lowercase letters, digits and `-`, at most 63)")]
    NotName(String),
}

/// Parses a Kubernetes memory quantity (`128Mi`, `1G`, `65536`) into bytes.
pub fn parse_memory(text: &str) -> Result<u64, ValueError> {
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(s, m)| text.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((text, 1));
    let value: f64 = number
        .parse()
        .map_err(|_| ValueError::NotMemory(text.to_string()))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(ValueError::NotPositive(text.to_string()));
    }
    Ok((value * scale as f64).round() as u64)
}

/// Parses a Kubernetes CPU quantity (`500m`, `0.5`, `2`) into millicores.
pub fn parse_cpu(text: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::NotCpu(text.to_string());
    let millis = match text.strip_suffix('m') {
        Some(n) => n.parse::<u64>().map_err(|_| bad())?,
        None => {
            let cores: f64 = text.parse().map_err(|_| bad())?;
            if !cores.is_finite() || cores <= 0.0 {
                return Err(bad());
            }
            (cores * 1000.0).round() as u64
        }
    };
    if millis == 0 {
        return Err(ValueError::Zero(text.to_string()));
    }
    Ok(millis)
}

/// Parses a hex CAN id (`0x3A0`, `3A0`, `18FF0010`) into the Linux `can_id` (EFF flag for 8 digits).
pub fn parse_can_id(text: &str) -> Result<u32, ValueError> {
    let digits = text.trim().trim_start_matches("0x").trim_start_matches("0X");
    let id = u32::from_str_radix(digits, 16).map_err(|_| ValueError::NotCanId(text.to_string()))?;
    if digits.len() > 3 || id > vcan::frame::SFF_MAX {
        vcan::CanId::extended(id)
            .map(|i| i.to_linux())
            .map_err(|e| ValueError::CanIdRange(e.to_string()))
    } else {
        Ok(id)
    }
}

fn parse_image(text: &str) -> Result<ImageRef, ValueError> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(ValueError::NotImage(text.to_string()));
    }
    if text.contains('@') {
        return Err(ValueError::Digest);
    }
    let (repository, tag) = match text.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (text, "latest"),
    };
    if repository.is_empty() || tag.is_empty() {
        return Err(ValueError::NotImage(text.to_string()));
    }
    Ok(ImageRef {
        repository: repository.to_string(),
        tag: tag.to_string(),
    })
}

/// A Kubernetes DNS label: lowercase alphanumerics and `-`, 1-63 characters.
fn check_name(name: &str) -> Result<(), ValueError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ValueError::NotName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: hvac
  annotations:
    parity.agl.io/can-buses: vehicle
    parity.agl.io/ready-frame: "0x3A0"
spec:
  restartPolicy: OnFailure
  containers:
    - name: hvac
      image: agl/hvac-controller:1.0
      args: ["--verbose"]
      env:
        - name: HEARTBEAT_MS
          value: "100"
      resources:
        limits: { memory: 64Mi, cpu: 500m }
"#;

    fn parse_str(text: &str) -> Result<Vec<WorkloadSpec>, ManifestError> {
        parse(text, Path::new("fixtures/test.yaml"))
    }

    #[test]
    fn pod_is_read() {
        let w = &parse_str(POD).unwrap()[0];
        assert_eq!(w.name, "hvac");
        assert_eq!(w.buses, vec!["vehicle"]);
        assert_eq!(w.readiness, Readiness::CanFrame(0x3A0));
        assert_eq!(w.restart_policy, RestartPolicy::OnFailure);
        let c = &w.containers[0];
        assert_eq!(c.image.binary_name(), "hvac-controller");
        assert_eq!(c.image.tag, "1.0");
        assert_eq!(c.env, vec![("HEARTBEAT_MS".to_string(), "100".to_string())]);
        assert_eq!(c.limits.memory_bytes, Some(64 << 20));
        assert_eq!(c.limits.cpu_millis, Some(500));
    }

    #[test]
    fn deployment_with_several_documents() {
        let text = format!(
            "{POD}\n---\n{}",
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: body
  annotations: { parity.agl.io/can-buses: "vehicle, body" }
spec:
  replicas: 1
  selector: { matchLabels: { app: body } }
  template:
    metadata: { labels: { app: body } }
    spec:
      containers:
        - name: bcm
          image: registry.example/agl/body-control
          readinessProbe:
            exec: { command: ["/body-control", "--probe"] }
            periodSeconds: 1
"#
        );
        let all = parse_str(&text).unwrap();
        assert_eq!(all.len(), 2);
        let body = &all[1];
        assert_eq!(body.kind, "Deployment");
        assert_eq!(body.buses, vec!["vehicle", "body"]);
        assert_eq!(body.readiness, Readiness::Exec);
        assert_eq!(body.restart_policy, RestartPolicy::Always);
        assert_eq!(body.containers[0].image.tag, "latest");
        assert_eq!(body.containers[0].image.binary_name(), "body-control");
        assert_eq!(body.document, 2);
    }

    fn error_of(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_field_names_path_and_file() {
        let text = POD.replace("      args:", "      livenessProbe: {}\n      args:");
        let e = error_of(&text);
        assert!(
            e.starts_with("fixtures/test.yaml: document 1: spec.containers[0]"),
            "{e}"
        );
        assert!(e.contains("unknown field `livenessProbe`"), "{e}");
    }

    #[test]
    fn unsupported_kind_and_values() {
        assert!(
            error_of(&POD.replace("kind: Pod", "kind: Service")).contains("kind: `Service` is not supported")
        );
        assert!(error_of(&POD.replace("apiVersion: v1", "apiVersion: apps/v1")).contains("apiVersion"));
        let e = error_of(&POD.replace("memory: 64Mi", "memory: lots"));
        assert!(e.contains("spec.containers[0].resources.limits.memory"), "{e}");
        let e = error_of(&POD.replace("restartPolicy: OnFailure", "restartPolicy: Sometimes"));
        assert!(e.contains("spec.restartPolicy"), "{e}");
        let e = error_of(
            &POD.replace("valueFrom", "x")
                .replace("value: \"100\"", "valueFrom: {}"),
        );
        assert!(e.contains("spec.containers[0].env[0]"), "{e}");
        let e = error_of(&POD.replace("ready-frame: \"0x3A0\"", "redy-frame: \"0x3A0\""));
        assert!(
            e.contains("metadata.annotations.parity.agl.io/redy-frame: unknown annotation"),
            "{e}"
        );
        let e = error_of(&POD.replace("    parity.agl.io/can-buses: vehicle\n", ""));
        assert!(e.contains("can-buses: required"), "{e}");
        let e = error_of(&POD.replace("ready-frame: \"0x3A0\"", "ready-frame: \"zz\""));
        assert!(e.contains("not a hex CAN id"), "{e}");
        let e = error_of(&POD.replace("name: HEARTBEAT_MS", "name: CAN_BUS"));
        assert!(e.contains("env[0].name"), "{e}");
    }

    #[test]
    fn yaml_syntax_error_has_location() {
        let e = error_of("apiVersion: v1\nkind: [Pod\n");
        assert!(e.contains("fixtures/test.yaml: document 1"), "{e}");
        assert!(e.contains("line"), "{e}");
        assert!(matches!(
            parse_str("# nothing\n"),
            Err(ManifestError::Empty { .. })
        ));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_memory("128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("65536"), Ok(65536));
        assert!(parse_memory("-1Mi").is_err());
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("1.5"), Ok(1500));
        assert!(parse_cpu("0").is_err());
        assert_eq!(parse_can_id("0x3A0"), Ok(0x3A0));
        assert_eq!(
            parse_can_id("18FF0010"),
            Ok(0x18FF_0010 | vcan::frame::CAN_EFF_FLAG)
        );
        assert!(parse_can_id("3FFFFFFF").is_err());
    }

    #[test]
    fn restart_policy_semantics() {
        assert!(RestartPolicy::Always.restarts_after(Some(0)));
        assert!(!RestartPolicy::OnFailure.restarts_after(Some(0)));
        assert!(RestartPolicy::OnFailure.restarts_after(None));
        assert!(!RestartPolicy::Never.restarts_after(Some(1)));
    }
}
