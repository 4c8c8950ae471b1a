//! Kubernetes objects, read with the Kubernetes API types (`k8s-openapi`), into the workload model.
//!
//! Each YAML document is deserialized into its `k8s-openapi` type. Those types skip fields they do not know,
//! so the deserializer is wrapped in `serde_ignored`: a field that is not in the Kubernetes schema is an error
//! naming the file, the document and the field path. Workload kinds (Pod, Deployment, StatefulSet,
//! DaemonSet, ReplicaSet, Job) become [`WorkloadSpec`]s; ConfigMaps and Secrets feed their `env[].valueFrom`,
//! `envFrom` and volumes; every other object is kept as an [`OtherObject`], listed in the report as not
//! deployed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use super::error::ManifestError;
use super::fields::{self, FieldUse};
use super::model::{
    ContainerSpec, ExecProbe, OtherObject, Readiness, Resources, RestartPolicy, SecuritySpec, VolumeMount,
    VolumeSource, VolumeSpec, WorkloadSpec,
};
use super::values::{check_name, parse_can_id, parse_cpu, parse_image, parse_memory};

/// Annotation naming the CAN buses a pod joins.
pub const ANNOTATION_BUSES: &str = "parity.agl.io/can-buses";
/// Annotation giving a CAN-heartbeat readiness probe.
pub const ANNOTATION_READY_FRAME: &str = "parity.agl.io/ready-frame";
/// Annotation naming the SocketCAN interface of a bus: `vehicle=can0, body=vcan1`.
pub const ANNOTATION_INTERFACES: &str = "parity.agl.io/can-interfaces";
const ANNOTATION_PREFIX: &str = "parity.agl.io/";
const KNOWN_ANNOTATIONS: &[&str] = &[ANNOTATION_BUSES, ANNOTATION_READY_FRAME, ANNOTATION_INTERFACES];
/// Kinds whose pods are deployed.
const WORKLOAD_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "ReplicaSet",
    "DaemonSet",
    "Job",
];
/// Resource-name prefix of the `k8s-socketcan` device plugin: `k8s.collabora.com/socketcan-<bus>: 1`.
pub const DEVICE_PLUGIN_PREFIX: &str = "k8s.collabora.com/socketcan-";
/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// More replicas than this on one virtual bus is refused (a typo rather than a test).
const MAX_REPLICAS: i32 = 16;

/// One document of a manifest file, typed.
pub(super) enum Document {
    Workload(Box<PendingWorkload>),
    Data(DataObject),
    Other(OtherObject),
}

/// A ConfigMap or Secret: the keys its consumers can read.
#[derive(Debug, Clone)]
pub(super) struct DataObject {
    pub kind: DataKind,
    pub name: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DataKind {
    ConfigMap,
    Secret,
}

impl DataKind {
    fn label(self) -> &'static str {
        match self {
            DataKind::ConfigMap => "ConfigMap",
            DataKind::Secret => "Secret",
        }
    }
}

/// A workload object whose ConfigMap/Secret references are not resolved yet (they may live in other files).
pub(super) struct PendingWorkload {
    path: PathBuf,
    doc: usize,
    kind: String,
    meta: ObjectMeta,
    template_meta: ObjectMeta,
    pod: core::PodSpec,
    replicas: u32,
    /// `spec` for a Pod, `spec.template.spec` for the controllers.
    prefix: &'static str,
    fields: Vec<FieldUse>,
}

/// Reads every document of a manifest file.
pub(super) fn documents(text: &str, path: &Path) -> Result<Vec<Document>, ManifestError> {
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = index + 1;
        let mut value = Value::deserialize(de).map_err(|e| field_error(path, doc, "(document)", e))?;
        if value.is_null() {
            continue; // an empty document between `---` separators
        }
        quantities_as_strings(&mut value, false);
        out.push(document(value, path, doc)?);
    }
    Ok(out)
}

fn document(value: Value, path: &Path, doc: usize) -> Result<Document, ManifestError> {
    let err = |field: &str, reason: String| ManifestError::Field {
        path: path.to_path_buf(),
        doc,
        field: field.to_string(),
        reason,
    };
    let text_of = |key: &str| -> Result<String, ManifestError> {
        match value.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(err(key, "must be a string".into())),
            None => Err(err(key, "required".into())),
        }
    };
    let api_version = text_of("apiVersion")?;
    let kind = text_of("kind")?;
    // The field table is kept for workloads only.
    let set_fields = if WORKLOAD_KINDS.contains(&kind.as_str()) {
        fields::set_fields(&value)
    } else {
        Vec::new()
    };
    let pending = |meta: ObjectMeta,
                   template_meta: ObjectMeta,
                   pod: core::PodSpec,
                   replicas: Option<i32>,
                   prefix: &'static str|
     -> Result<Document, ManifestError> {
        let replicas = match replicas {
            None => 1,
            Some(n) if (1..=MAX_REPLICAS).contains(&n) => n as u32,
            Some(n) => {
                return Err(err(
                    "spec.replicas",
                    format!("{n} replicas: between 1 and {MAX_REPLICAS} pods run on a virtual bus"),
                ))
            }
        };
        let pod_prefix: Vec<&str> = prefix.split('.').collect();
        let fields = set_fields
            .iter()
            .map(|p| {
                let (class, note) = fields::classify(p, &pod_prefix);
                FieldUse {
                    path: fields::display_path(p),
                    class,
                    note: note.to_string(),
                }
            })
            .collect();
        Ok(Document::Workload(Box::new(PendingWorkload {
            path: path.to_path_buf(),
            doc,
            kind: kind.clone(),
            meta,
            template_meta,
            pod,
            replicas,
            prefix,
            fields,
        })))
    };
    let template = |t: core::PodTemplateSpec| -> Result<(ObjectMeta, core::PodSpec), ManifestError> {
        let spec = t
            .spec
            .ok_or_else(|| err("spec.template.spec", "required".into()))?;
        Ok((t.metadata.unwrap_or_default(), spec))
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => {
            let pod: core::Pod = typed(value, path, doc)?;
            let spec = pod.spec.ok_or_else(|| err("spec", "required".into()))?;
            pending(pod.metadata, ObjectMeta::default(), spec, None, "spec")
        }
        ("apps/v1", "Deployment") => {
            let d: apps::Deployment = typed(value, path, doc)?;
            let spec = d.spec;
            let (tm, ps) = template(spec.template)?;
            pending(d.metadata, tm, ps, spec.replicas, "spec.template.spec")
        }
        ("apps/v1", "StatefulSet") => {
            let s: apps::StatefulSet = typed(value, path, doc)?;
            let spec = s.spec;
            let (tm, ps) = template(spec.template)?;
            pending(s.metadata, tm, ps, spec.replicas, "spec.template.spec")
        }
        ("apps/v1", "ReplicaSet") => {
            let r: apps::ReplicaSet = typed(value, path, doc)?;
            let spec = r.spec;
            let t = spec
                .template
                .ok_or_else(|| err("spec.template", "required".into()))?;
            let (tm, ps) = template(t)?;
            pending(r.metadata, tm, ps, spec.replicas, "spec.template.spec")
        }
        ("apps/v1", "DaemonSet") => {
            // One node: one pod.
            let d: apps::DaemonSet = typed(value, path, doc)?;
            let spec = d.spec;
            let (tm, ps) = template(spec.template)?;
            pending(d.metadata, tm, ps, None, "spec.template.spec")
        }
        ("batch/v1", "Job") => {
            let j: batch::Job = typed(value, path, doc)?;
            let spec = j.spec.ok_or_else(|| err("spec", "required".into()))?;
            let (tm, ps) = template(spec.template)?;
            pending(j.metadata, tm, ps, spec.parallelism, "spec.template.spec")
        }
        ("v1", "ConfigMap") => {
            let c: core::ConfigMap = typed(value, path, doc)?;
            let name = c
                .metadata
                .name
                .ok_or_else(|| err("metadata.name", "required".into()))?;
            let mut data: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in c.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            Ok(Document::Data(DataObject {
                kind: DataKind::ConfigMap,
                name,
                data,
            }))
        }
        ("v1", "Secret") => {
            let s: core::Secret = typed(value, path, doc)?;
            let name = s
                .metadata
                .name
                .ok_or_else(|| err("metadata.name", "required".into()))?;
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            Ok(Document::Data(DataObject {
                kind: DataKind::Secret,
                name,
                data,
            }))
        }
        (api, kind) if WORKLOAD_KINDS.contains(&kind) || matches!(kind, "ConfigMap" | "Secret") => Err(err(
            "apiVersion",
            format!("`{api}` is not the API version of a {kind}"),
        )),
        (api, other) => {
            let name = value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // Objects with a schema are checked against it; custom resources are taken as they are.
            validate_other(api, other, value, path, doc)?;
            Ok(Document::Other(OtherObject {
                api_version: api.to_string(),
                kind: other.to_string(),
                name,
                source: path.to_path_buf(),
                document: doc,
            }))
        }
    }
}

/// Checks a non-workload object of a known kind against its schema (kinds without one here pass).
fn validate_other(api: &str, kind: &str, value: Value, path: &Path, doc: usize) -> Result<(), ManifestError> {
    use k8s_openapi::api::{networking::v1 as net, policy::v1 as policy, rbac::v1 as rbac};
    match (api, kind) {
        ("v1", "Service") => schema::<core::Service>(value, path, doc)?,
        ("v1", "Namespace") => schema::<core::Namespace>(value, path, doc)?,
        ("v1", "ServiceAccount") => schema::<core::ServiceAccount>(value, path, doc)?,
        ("v1", "PersistentVolumeClaim") => schema::<core::PersistentVolumeClaim>(value, path, doc)?,
        ("batch/v1", "CronJob") => schema::<batch::CronJob>(value, path, doc)?,
        ("networking.k8s.io/v1", "NetworkPolicy") => schema::<net::NetworkPolicy>(value, path, doc)?,
        ("networking.k8s.io/v1", "Ingress") => schema::<net::Ingress>(value, path, doc)?,
        ("policy/v1", "PodDisruptionBudget") => schema::<policy::PodDisruptionBudget>(value, path, doc)?,
        ("rbac.authorization.k8s.io/v1", "Role") => schema::<rbac::Role>(value, path, doc)?,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => schema::<rbac::RoleBinding>(value, path, doc)?,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => schema::<rbac::ClusterRole>(value, path, doc)?,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            schema::<rbac::ClusterRoleBinding>(value, path, doc)?
        }
        _ => {}
    }
    Ok(())
}

/// Checks a document against its Kubernetes type, keeping nothing of it.
fn schema<T: DeserializeOwned>(value: Value, path: &Path, doc: usize) -> Result<(), ManifestError> {
    typed::<T>(value, path, doc).map(|_| ())
}

/// Deserializes a document into its Kubernetes type: type errors and fields outside the schema both name
/// the field path.
fn typed<T: DeserializeOwned>(value: Value, path: &Path, doc: usize) -> Result<T, ManifestError> {
    let mut unknown: Vec<String> = Vec::new();
    let result: Result<T, _> = {
        let mut record = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
        let de = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize(de)
    };
    let typed = result.map_err(|e| {
        let field = e.path().to_string();
        field_error(path, doc, &field, e.into_inner())
    })?;
    if let Some(first) = unknown.first() {
        let (parent, name) = match first.rsplit_once('.') {
            Some((parent, name)) => (parent.to_string(), name.to_string()),
            None => (String::new(), first.clone()),
        };
        let others = match unknown.len() {
            1 => String::new(),
            n => format!(" ({} more: {})", n - 1, unknown[1..].join(", ")),
        };
        return Err(ManifestError::Field {
            path: path.to_path_buf(),
            doc,
            field: first.clone(),
            reason: format!(
                "unknown field `{name}`: not in the Kubernetes schema{}{others}",
                if parent.is_empty() {
                    String::new()
                } else {
                    format!(" of `{parent}`")
                }
            ),
        });
    }
    Ok(typed)
}

fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// Reads values as `kubectl` does: YAML numbers where Kubernetes takes a quantity (`cpu: 1`,
/// `memory: 65536`) become strings, and YAML 1.1 octal file modes (`defaultMode: 0400`) numbers.
fn quantities_as_strings(value: &mut Value, in_quantities: bool) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                let quantities = matches!(key, "limits" | "requests" | "overhead");
                // YAML 1.1 (what kubectl reads) takes `0400` as octal; YAML 1.2 as text.
                if matches!(key, "defaultMode" | "mode") {
                    let octal = v
                        .as_str()
                        .filter(|t| t.len() > 1 && t.starts_with('0'))
                        .and_then(|t| i64::from_str_radix(&t[1..], 8).ok());
                    if let Some(n) = octal {
                        *v = Value::Number(n.into());
                    }
                    continue;
                }
                if (in_quantities || key == "sizeLimit") && v.is_number() {
                    if let Value::Number(n) = v {
                        *v = Value::String(n.to_string());
                    }
                } else {
                    quantities_as_strings(v, quantities);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|i| quantities_as_strings(i, false)),
        _ => {}
    }
}

pub(super) fn field_error(
    path: &Path,
    doc: usize,
    field: &str,
    reason: impl std::fmt::Display,
) -> ManifestError {
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

/// The ConfigMaps and Secrets a workload may read, by kind and name.
#[derive(Debug, Default)]
pub(super) struct DataObjects {
    objects: BTreeMap<(&'static str, String), DataObject>,
}

impl DataObjects {
    pub fn insert(&mut self, object: DataObject) {
        self.objects
            .insert((object.kind.label(), object.name.clone()), object);
    }

    fn get(&self, kind: DataKind, name: &str) -> Option<&DataObject> {
        self.objects.get(&(kind.label(), name.to_string()))
    }
}

/// Turns a workload object into the model, reading its ConfigMap/Secret references from `data`.
pub(super) fn resolve(w: &PendingWorkload, data: &DataObjects) -> Result<WorkloadSpec, ManifestError> {
    let err = |field: &str, reason: String| ManifestError::Field {
        path: w.path.clone(),
        doc: w.doc,
        field: field.to_string(),
        reason,
    };
    let name = w
        .meta
        .name
        .clone()
        .ok_or_else(|| err("metadata.name", "required".into()))?;
    check_name(&name).map_err(|r| err("metadata.name", r.to_string()))?;
    // A controller's own annotations apply to its pods unless the template overrides them.
    let mut annotations = w.meta.annotations.clone().unwrap_or_default();
    annotations.extend(w.template_meta.annotations.clone().unwrap_or_default());
    // The field path of an annotation: where the document sets it (the template's wins), or where a pod's
    // annotations go when it is not set.
    let annotation_field = |key: &str| -> String {
        let set_in = |meta: &ObjectMeta| meta.annotations.as_ref().is_some_and(|a| a.contains_key(key));
        if w.prefix == "spec" || (!set_in(&w.template_meta) && set_in(&w.meta)) {
            format!("metadata.annotations.{key}")
        } else {
            format!("spec.template.metadata.annotations.{key}")
        }
    };
    for key in annotations.keys() {
        if key.starts_with(ANNOTATION_PREFIX) && !KNOWN_ANNOTATIONS.contains(&key.as_str()) {
            return Err(err(
                &annotation_field(key),
                format!("unknown annotation (supported: {})", KNOWN_ANNOTATIONS.join(", ")),
            ));
        }
    }
    let labels = match w.prefix {
        "spec" => w.meta.labels.clone(),
        _ => w.template_meta.labels.clone(),
    }
    .unwrap_or_default();

    let prefix = w.prefix;
    let pod = &w.pod;
    let is_controller = !matches!(w.kind.as_str(), "Pod" | "Job");
    let policy_field = format!("{prefix}.restartPolicy");
    let restart_policy = match pod.restart_policy.as_deref() {
        None if w.kind == "Job" => {
            return Err(err(
                &policy_field,
                "a Job's pods need restartPolicy OnFailure or Never".into(),
            ))
        }
        None => RestartPolicy::Always,
        Some(text) => RestartPolicy::parse(text).ok_or_else(|| {
            err(
                &policy_field,
                format!("`{text}` is not a restart policy (Always, OnFailure, Never)"),
            )
        })?,
    };
    if is_controller && restart_policy != RestartPolicy::Always {
        return Err(err(
            &policy_field,
            format!("a {}'s pods must use restartPolicy Always", w.kind),
        ));
    }
    if w.kind == "Job" && restart_policy == RestartPolicy::Always {
        return Err(err(
            &policy_field,
            "a Job's pods need restartPolicy OnFailure or Never".into(),
        ));
    }
    let grace_field = format!("{prefix}.terminationGracePeriodSeconds");
    let grace = pod
        .termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace < 0 {
        return Err(err(&grace_field, "must not be negative".into()));
    }

    let volumes = volumes(pod, data, &name, prefix, &err)?;
    let context = ContainerContext {
        pod_name: &name,
        pod_security: pod.security_context.as_ref(),
        volumes: &volumes,
        declared_volumes: pod.volumes.iter().flatten().map(|v| v.name.clone()).collect(),
        data,
    };
    if pod.containers.is_empty() {
        return Err(err(
            &format!("{prefix}.containers"),
            "at least one container is required".into(),
        ));
    }
    let mut device_buses: Vec<String> = Vec::new();
    let mut init_containers = Vec::new();
    for (i, c) in pod.init_containers.iter().flatten().enumerate() {
        let field = format!("{prefix}.initContainers[{i}]");
        let mut spec = convert_container(c, &field, &context, true, &mut device_buses, &err)?;
        spec.location = format!("{}: document {}: {field}", w.path.display(), w.doc);
        init_containers.push(spec);
    }
    let mut containers = Vec::new();
    for (i, c) in pod.containers.iter().enumerate() {
        let field = format!("{prefix}.containers[{i}]");
        let mut spec = convert_container(c, &field, &context, false, &mut device_buses, &err)?;
        spec.location = format!("{}: document {}: {field}", w.path.display(), w.doc);
        containers.push(spec);
    }
    let mut names: Vec<&str> = init_containers
        .iter()
        .chain(&containers)
        .map(|c| c.name.as_str())
        .collect();
    names.sort_unstable();
    if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(
            &format!("{prefix}.containers"),
            format!("container name `{}` is used twice", dup[0]),
        ));
    }

    let buses_field = annotation_field(ANNOTATION_BUSES);
    let mut buses: Vec<String> = match annotations.get(ANNOTATION_BUSES) {
        Some(list) => list
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect(),
        None => Vec::new(),
    };
    let annotated = buses.clone();
    for bus in &device_buses {
        if !buses.contains(bus) {
            buses.push(bus.clone());
        }
    }
    if buses.is_empty() {
        return Err(err(
            &buses_field,
            format!(
                "required: name the CAN bus(es) this workload joins (or request `{DEVICE_PLUGIN_PREFIX}<bus>: 1` in resources.limits)"
            ),
        ));
    }
    for bus in &buses {
        check_name(bus).map_err(|r| err(&buses_field, format!("bus name `{bus}`: {r}")))?;
    }

    let interfaces_field = annotation_field(ANNOTATION_INTERFACES);
    let interfaces = interface_names(
        &buses,
        &annotated,
        annotations.get(ANNOTATION_INTERFACES).map(String::as_str),
    )
    .map_err(|r| err(&interfaces_field, r))?;

    let ready_field = annotation_field(ANNOTATION_READY_FRAME);
    let ready_frame = match annotations.get(ANNOTATION_READY_FRAME) {
        Some(text) => Some(parse_can_id(text).map_err(|r| err(&ready_field, r.to_string()))?),
        None => None,
    };
    let has_exec = containers.iter().any(|c| c.readiness.is_some());
    let readiness = match (ready_frame, has_exec) {
        (Some(_), true) => {
            return Err(err(
                &ready_field,
                "give either a CAN readiness frame or exec readinessProbes, not both".into(),
            ))
        }
        (Some(id), false) => Readiness::CanFrame(id),
        (None, true) => Readiness::Exec,
        (None, false) => Readiness::Started,
    };

    Ok(WorkloadSpec {
        name,
        source: w.path.clone(),
        document: w.doc,
        kind: w.kind.clone(),
        labels,
        buses,
        interfaces,
        readiness,
        restart_policy,
        termination_grace: Duration::from_secs(grace as u64),
        replicas: w.replicas,
        init_containers,
        containers,
        volumes,
        fields: w.fields.clone(),
    })
}

/// The SocketCAN interface of each bus: named by the annotation (`bus=ifname` pairs), else like the bus when
/// only a device-plugin request names it (the plugin creates an interface of that name), else `can<i>`.
fn interface_names(
    buses: &[String],
    annotated: &[String],
    names: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for pair in names
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((bus, ifname)) = pair.split_once('=') else {
            return Err(format!("`{pair}`: expected BUS=IFNAME, e.g. `vehicle=can0`"));
        };
        let (bus, ifname) = (bus.trim(), ifname.trim());
        if !buses.iter().any(|b| b == bus) {
            return Err(format!(
                "`{bus}` is not a bus of this workload (buses: {})",
                buses.join(", ")
            ));
        }
        check_ifname(ifname).map_err(|r| format!("interface `{ifname}`: {r}"))?;
        given.insert(bus.to_string(), ifname.to_string());
    }
    let out: Vec<String> = buses
        .iter()
        .enumerate()
        .map(|(i, bus)| match given.get(bus) {
            Some(name) => name.clone(),
            None if !annotated.contains(bus) && check_ifname(bus).is_ok() => bus.clone(),
            None => format!("can{i}"),
        })
        .collect();
    for (i, name) in out.iter().enumerate() {
        if let Some(j) = out[..i].iter().position(|n| n == name) {
            return Err(format!(
                "buses `{}` and `{}` would both be interface `{name}`: name them apart",
                buses[j], buses[i]
            ));
        }
    }
    Ok(out)
}

/// A Linux interface name: 1 to 15 characters (`IFNAMSIZ` - 1), no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("must be 1 to 15 characters");
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err("must not contain `/`, `:` or whitespace");
    }
    Ok(())
}

type ErrFn<'a> = dyn Fn(&str, String) -> ManifestError + 'a;

fn volumes(
    pod: &core::PodSpec,
    data: &DataObjects,
    pod_name: &str,
    prefix: &str,
    err: &ErrFn<'_>,
) -> Result<Vec<VolumeSpec>, ManifestError> {
    let mut out = Vec::new();
    for (i, v) in pod.volumes.iter().flatten().enumerate() {
        let field = format!("{prefix}.volumes[{i}]");
        let (kind, name, items, mode, optional) = if let Some(cm) = &v.config_map {
            (
                DataKind::ConfigMap,
                cm.name.clone(),
                &cm.items,
                cm.default_mode,
                cm.optional,
            )
        } else if let Some(s) = &v.secret {
            let name = s
                .secret_name
                .clone()
                .ok_or_else(|| err(&format!("{field}.secret.secretName"), "required".into()))?;
            (DataKind::Secret, name, &s.items, s.default_mode, s.optional)
        } else if v.empty_dir.is_some() {
            out.push(VolumeSpec {
                name: v.name.clone(),
                source: VolumeSource::EmptyDir,
            });
            continue;
        } else {
            // Another volume type: recorded as not provided (see the field table), not mounted.
            tracing::debug!(pod = pod_name, volume = %v.name, "volume type not provided here");
            continue;
        };
        let mode = mode.unwrap_or(0o644);
        if !(0..=0o777).contains(&mode) {
            return Err(err(
                &format!("{field}.defaultMode"),
                format!("{mode} is not a file mode"),
            ));
        }
        let files = match data.get(kind, &name) {
            None if optional == Some(true) => BTreeMap::new(),
            None => {
                return Err(err(
                    &field,
                    format!(
                        "{} `{name}` is not defined in the project's manifests",
                        kind.label()
                    ),
                ))
            }
            Some(object) => match items {
                None => object.data.clone(),
                Some(items) => {
                    let mut files = BTreeMap::new();
                    for (j, item) in items.iter().enumerate() {
                        let content = object.data.get(&item.key).ok_or_else(|| {
                            err(
                                &format!("{field}.items[{j}].key"),
                                format!("{} `{name}` has no key `{}`", kind.label(), item.key),
                            )
                        })?;
                        safe_relative(&item.path).map_err(|r| err(&format!("{field}.items[{j}].path"), r))?;
                        files.insert(item.path.clone(), content.clone());
                    }
                    files
                }
            },
        };
        for key in files.keys() {
            safe_relative(key).map_err(|r| err(&field, format!("key `{key}`: {r}")))?;
        }
        out.push(VolumeSpec {
            name: v.name.clone(),
            source: VolumeSource::Files {
                files,
                mode: mode as u32,
            },
        });
    }
    Ok(out)
}

/// A file path inside a volume: relative, no `..`.
fn safe_relative(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
        Err(format!("`{path}` must be a relative path without `..`"))
    } else {
        Ok(())
    }
}

struct ContainerContext<'a> {
    pod_name: &'a str,
    pod_security: Option<&'a core::PodSecurityContext>,
    volumes: &'a [VolumeSpec],
    declared_volumes: Vec<String>,
    data: &'a DataObjects,
}

fn convert_container(
    c: &core::Container,
    field: &str,
    cx: &ContainerContext<'_>,
    init: bool,
    device_buses: &mut Vec<String>,
    err: &ErrFn<'_>,
) -> Result<ContainerSpec, ManifestError> {
    check_name(&c.name).map_err(|r| err(&format!("{field}.name"), r.to_string()))?;
    let image_text = c
        .image
        .as_deref()
        .ok_or_else(|| err(&format!("{field}.image"), "required".into()))?;
    let image = parse_image(image_text).map_err(|r| err(&format!("{field}.image"), r.to_string()))?;
    let sidecar = match c.restart_policy.as_deref() {
        None => false,
        Some("Always") if init => true,
        Some(other) if init => {
            return Err(err(
                &format!("{field}.restartPolicy"),
                format!("`{other}`: an init container's restartPolicy can only be Always (a sidecar)"),
            ))
        }
        Some(_) => {
            return Err(err(
                &format!("{field}.restartPolicy"),
                "container-level restartPolicy is only supported on init containers (sidecars)".into(),
            ))
        }
    };

    let env = environment(c, field, cx, err)?;
    let expand = |s: &String| expand_vars(s, &env);
    let command: Vec<String> = c.command.iter().flatten().map(expand).collect();
    let args: Vec<String> = c.args.iter().flatten().map(expand).collect();

    let (mut limits, mut requests) = (Resources::default(), Resources::default());
    if let Some(r) = &c.resources {
        for (map, out, what) in [
            (&r.limits, &mut limits, "limits"),
            (&r.requests, &mut requests, "requests"),
        ] {
            for (key, quantity) in map.iter().flatten() {
                let here = format!("{field}.resources.{what}.{key}");
                let text = quantity.0.as_str();
                match key.as_str() {
                    "memory" => {
                        out.memory_bytes = Some(parse_memory(text).map_err(|r| err(&here, r.to_string()))?)
                    }
                    "cpu" => out.cpu_millis = Some(parse_cpu(text).map_err(|r| err(&here, r.to_string()))?),
                    device if device.starts_with(DEVICE_PLUGIN_PREFIX) => {
                        let bus = &device[DEVICE_PLUGIN_PREFIX.len()..];
                        check_name(bus).map_err(|r| err(&here, format!("bus name `{bus}`: {r}")))?;
                        if what == "limits" && !device_buses.iter().any(|b| b == bus) {
                            device_buses.push(bus.to_string());
                        }
                    }
                    _ => {} // other resources (ephemeral-storage, hugepages): no behaviour, listed as such
                }
            }
        }
    }
    if let (Some(req), Some(lim)) = (requests.memory_bytes, limits.memory_bytes) {
        if req > lim {
            return Err(err(
                &format!("{field}.resources.requests.memory"),
                "request exceeds the limit".into(),
            ));
        }
    }

    let probe = |p: &Option<core::Probe>, which: &str| -> Result<Option<ExecProbe>, ManifestError> {
        let Some(p) = p else { return Ok(None) };
        let here = format!("{field}.{which}");
        if p.http_get.is_some() || p.tcp_socket.is_some() || p.grpc.is_some() {
            return Err(err(
                &here,
                "only exec probes are supported: workloads here have no IP network for httpGet, tcpSocket or grpc".into(),
            ));
        }
        let command = p
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .unwrap_or_default();
        if command.is_empty() {
            return Err(err(
                &format!("{here}.exec.command"),
                "required and must not be empty".into(),
            ));
        }
        let secs = |v: Option<i32>, default: i32, min: i32, name: &str| -> Result<Duration, ManifestError> {
            let v = v.unwrap_or(default);
            if v < min {
                return Err(err(&format!("{here}.{name}"), format!("must be at least {min}")));
            }
            Ok(Duration::from_secs(v as u64))
        };
        let count = |v: Option<i32>, default: i32, name: &str| -> Result<u32, ManifestError> {
            let v = v.unwrap_or(default);
            if v < 1 {
                return Err(err(&format!("{here}.{name}"), "must be at least 1".into()));
            }
            Ok(v as u32)
        };
        let success_threshold = count(p.success_threshold, 1, "successThreshold")?;
        if which != "readinessProbe" && success_threshold != 1 {
            return Err(err(
                &format!("{here}.successThreshold"),
                "must be 1 for liveness and startup probes".into(),
            ));
        }
        Ok(Some(ExecProbe {
            command,
            initial_delay: secs(p.initial_delay_seconds, 0, 0, "initialDelaySeconds")?,
            period: secs(p.period_seconds, 10, 1, "periodSeconds")?,
            timeout: secs(p.timeout_seconds, 1, 1, "timeoutSeconds")?,
            failure_threshold: count(p.failure_threshold, 3, "failureThreshold")?,
            success_threshold,
        }))
    };
    let readiness = probe(&c.readiness_probe, "readinessProbe")?;
    let liveness = probe(&c.liveness_probe, "livenessProbe")?;
    let startup = probe(&c.startup_probe, "startupProbe")?;
    if init && !sidecar && (readiness.is_some() || liveness.is_some() || startup.is_some()) {
        return Err(err(
            field,
            "probes are only allowed on app containers and sidecars, not on run-to-completion init containers".into(),
        ));
    }

    let mut mounts = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let here = format!("{field}.volumeMounts[{i}]");
        if !cx.declared_volumes.contains(&m.name) {
            return Err(err(
                &format!("{here}.name"),
                format!("no volume `{}` in the pod", m.name),
            ));
        }
        if !m.mount_path.starts_with('/') || m.mount_path.split('/').any(|c| c == "..") {
            return Err(err(
                &format!("{here}.mountPath"),
                format!("`{}` must be an absolute path without `..`", m.mount_path),
            ));
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            safe_relative(sub).map_err(|r| err(&format!("{here}.subPath"), r))?;
        }
        if cx.volumes.iter().any(|v| v.name == m.name) {
            mounts.push(VolumeMount {
                volume: m.name.clone(),
                path: m.mount_path.clone(),
                sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
                read_only: m.read_only.unwrap_or(false),
            });
        }
    }

    let security = security(c, cx.pod_security, field, err)?;
    Ok(ContainerSpec {
        name: c.name.clone(),
        image,
        command,
        args,
        env,
        limits,
        requests,
        readiness,
        liveness,
        startup,
        mounts,
        security,
        sidecar,
        location: String::new(),
    })
}

fn security(
    c: &core::Container,
    pod: Option<&core::PodSecurityContext>,
    field: &str,
    err: &ErrFn<'_>,
) -> Result<SecuritySpec, ManifestError> {
    let own = c.security_context.as_ref();
    let id = |v: Option<i64>, name: &str| -> Result<Option<u32>, ManifestError> {
        match v {
            None => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                err(
                    &format!("{field}.securityContext.{name}"),
                    format!("{n} is not a user or group id"),
                )
            }),
        }
    };
    Ok(SecuritySpec {
        run_as_user: id(
            own.and_then(|s| s.run_as_user)
                .or(pod.and_then(|p| p.run_as_user)),
            "runAsUser",
        )?,
        run_as_group: id(
            own.and_then(|s| s.run_as_group)
                .or(pod.and_then(|p| p.run_as_group)),
            "runAsGroup",
        )?,
        run_as_non_root: own
            .and_then(|s| s.run_as_non_root)
            .or(pod.and_then(|p| p.run_as_non_root))
            .unwrap_or(false),
        read_only_root: own.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
    })
}

/// The container's environment in Kubernetes order: `envFrom` sources, then `env` (which wins), with
/// `$(VAR)` references to earlier variables expanded.
fn environment(
    c: &core::Container,
    field: &str,
    cx: &ContainerContext<'_>,
    err: &ErrFn<'_>,
) -> Result<Vec<(String, String)>, ManifestError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
        .iter_mut()
        .find(|(k, _)| *k == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    let text = |bytes: &[u8], here: &str| -> Result<String, ManifestError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| err(here, "the value is not UTF-8 text".into()))
    };
    for (i, source) in c.env_from.iter().flatten().enumerate() {
        let here = format!("{field}.envFrom[{i}]");
        let prefix = source.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = if let Some(r) = &source.config_map_ref {
            (DataKind::ConfigMap, r.name.clone(), r.optional)
        } else if let Some(r) = &source.secret_ref {
            (DataKind::Secret, r.name.clone(), r.optional)
        } else {
            return Err(err(&here, "needs configMapRef or secretRef".into()));
        };
        match cx.data.get(kind, &name) {
            None if optional == Some(true) => {}
            None => {
                return Err(err(
                    &here,
                    format!(
                        "{} `{name}` is not defined in the project's manifests",
                        kind.label()
                    ),
                ))
            }
            Some(object) => {
                for (key, value) in &object.data {
                    let var = format!("{prefix}{key}");
                    check_var_name(&var).map_err(|r| err(&here, r))?;
                    let value = text(value, &here)?;
                    set(&mut env, var, value);
                }
            }
        }
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let here = format!("{field}.env[{i}]");
        check_var_name(&var.name).map_err(|r| err(&format!("{here}.name"), r))?;
        let value = match (&var.value, &var.value_from) {
            (Some(v), None) => expand_vars(v, &env),
            (None, None) => String::new(),
            (Some(_), Some(_)) => return Err(err(&here, "give either value or valueFrom, not both".into())),
            (None, Some(from)) => {
                let key_ref = if let Some(r) = &from.config_map_key_ref {
                    Some((DataKind::ConfigMap, r.name.clone(), r.key.clone(), r.optional))
                } else {
                    from.secret_key_ref
                        .as_ref()
                        .map(|r| (DataKind::Secret, r.name.clone(), r.key.clone(), r.optional))
                };
                if let Some((kind, name, key, optional)) = key_ref {
                    match cx.data.get(kind, &name).and_then(|o| o.data.get(&key)) {
                        Some(bytes) => text(bytes, &here)?,
                        None if optional == Some(true) => continue,
                        None => {
                            return Err(err(
                                &format!("{here}.valueFrom"),
                                format!(
                                    "{} `{name}` key `{key}` is not defined in the project's manifests",
                                    kind.label()
                                ),
                            ))
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" => cx.pod_name.to_string(),
                        "metadata.namespace" => "default".to_string(),
                        other => {
                            return Err(err(
                                &format!("{here}.valueFrom.fieldRef.fieldPath"),
                                format!("`{other}` is not available here (supported: metadata.name, metadata.namespace)"),
                            ))
                        }
                    }
                } else {
                    return Err(err(
                        &format!("{here}.valueFrom"),
                        "supported sources: configMapKeyRef, secretKeyRef, fieldRef".into(),
                    ));
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn check_var_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(format!("`{name}` is not a valid variable name"));
    }
    if name.starts_with("CAN_BUS") {
        return Err(format!(
            "`{name}`: CAN_BUS* variables are set by the framework from the {ANNOTATION_BUSES} annotation"
        ));
    }
    Ok(())
}

/// Kubernetes' `$(VAR)` expansion: references to defined variables are replaced, `$$` is a literal `$`,
/// anything else stays as written.
fn expand_vars(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_expansion_follows_kubernetes() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand_vars("x$(A)y", &env), "x1y");
        assert_eq!(expand_vars("$$(A)", &env), "$(A)");
        assert_eq!(expand_vars("$(B)", &env), "$(B)");
        assert_eq!(expand_vars("cost $5 $(A", &env), "cost $5 $(A");
    }

    fn pod(annotations: &str, limits: &str) -> Result<WorkloadSpec, ManifestError> {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {{{annotations}}}\nspec:\n  containers:\n    - name: c\n      image: agl/x:1\n      resources: {{limits: {{{limits}}}}}\n"
        );
        crate::manifest::parse(&text, std::path::Path::new("p.yaml")).map(|mut v| v.remove(0))
    }

    #[test]
    fn interfaces_are_named_by_annotation_device_request_or_position() {
        let p = pod("parity.agl.io/can-buses: \"vehicle,body\"", "").unwrap();
        assert_eq!(p.interfaces, vec!["can0", "can1"]);
        assert_eq!(p.interface_of("body"), "can1");
        let p = pod(
            "parity.agl.io/can-buses: \"vehicle,body\", parity.agl.io/can-interfaces: \"body=vcan0\"",
            "",
        )
        .unwrap();
        assert_eq!(p.interfaces, vec!["can0", "vcan0"]);
        let p = pod(
            "parity.agl.io/can-buses: vehicle",
            "k8s.collabora.com/socketcan-chassis: 1",
        )
        .unwrap();
        assert_eq!(p.buses, vec!["vehicle", "chassis"]);
        assert_eq!(
            p.interfaces,
            vec!["can0", "chassis"],
            "a device request names its interface"
        );
        let e = pod(
            "parity.agl.io/can-buses: vehicle, parity.agl.io/can-interfaces: \"body=can1\"",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("can-interfaces") && e.contains("`body` is not a bus"),
            "{e}"
        );
        let e = pod(
            "parity.agl.io/can-buses: \"a,b\", parity.agl.io/can-interfaces: \"a=can1\"",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("would both be interface `can1`"), "{e}");
        let e = pod(
            "parity.agl.io/can-buses: a, parity.agl.io/can-interfaces: \"a=much-too-long-name0\"",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("1 to 15 characters"), "{e}");
    }

    #[test]
    fn numbers_become_quantities_only_where_quantities_are() {
        let mut v: Value =
            serde_yaml::from_str("resources: {limits: {cpu: 1, memory: 65536}}\nreplicas: 2\n").unwrap();
        quantities_as_strings(&mut v, false);
        assert_eq!(v["resources"]["limits"]["cpu"], Value::String("1".into()));
        assert_eq!(v["replicas"], Value::Number(2.into()));
    }
}
