//! What the framework does with each field of the Kubernetes schema: the one table of field classes.
//!
//! Every field a manifest sets falls in one of three classes, and the run report lists them per workload
//! and environment, so nothing is dropped without a trace:
//!
//! * **honoured** — acted on with Kubernetes' semantics in every environment;
//! * **no behaviour here** — meaningful to a cluster (scheduling, rollout, networking, naming) but with no
//!   effect on a workload on a CAN bus; accepted and listed;
//! * **not enforced** in some environments — honoured where the environment can apply it (see
//!   [`Enforcement`]), recorded but not applied elsewhere (e.g. memory limits of host processes).
//!
//! A field that is not in the Kubernetes schema at all is an error (see [`super::kube`]). [`RULES`] is the
//! table; a set field matches the rule with the longest path prefix, and a field no rule names is "no
//! behaviour here". The same table is `docs/manifest-fields.md`, generated from [`RULES`] by
//! [`markdown_table`] (a test fails when the file is stale; `UPDATE_DOCS=1 cargo test -p agl-parity --lib
//! docs_table` rewrites it).

/// Whether an environment applies a setting that needs the environment's help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// `resources.limits.memory`: a cgroup limit (container), the guest's memory size (vm).
    MemoryLimit,
    /// `resources.limits.cpu`: a CPU quota (container).
    CpuLimit,
    /// `securityContext.runAsUser/runAsGroup/runAsNonRoot`: the process's user and group.
    RunAsUser,
    /// `securityContext.readOnlyRootFilesystem`: a read-only root filesystem.
    ReadOnlyRoot,
    /// `volumes` (configMap, secret, emptyDir) and `volumeMounts`: files at the mount paths.
    Volumes,
    /// A setting no environment of this framework applies (lifecycle hooks, capabilities, other volume
    /// types): recorded, never enforced.
    Never,
}

/// What the framework does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "class", content = "needs")]
pub enum FieldClass {
    Honoured,
    NoBehaviour,
    /// Honoured only in environments that offer this enforcement.
    Enforced(Enforcement),
}

/// Where a rule's path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The document root (`apiVersion`, `metadata`, `spec.replicas` ...).
    Object,
    /// The pod spec (`spec` of a Pod, `spec.template.spec` of a Deployment ...).
    Pod,
    /// One container or init container of the pod spec.
    Container,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct FieldRule {
    pub scope: Scope,
    /// Dot-separated field names; a trailing `*` in a component matches any key with that prefix.
    pub path: &'static str,
    pub class: FieldClass,
    pub note: &'static str,
}

const fn rule(scope: Scope, path: &'static str, class: FieldClass, note: &'static str) -> FieldRule {
    FieldRule {
        scope,
        path,
        class,
        note,
    }
}

use Enforcement as E;
use FieldClass::{Enforced, Honoured, NoBehaviour};
use Scope::{Container as C, Object as O, Pod as P};

/// The table of field classes.
pub const RULES: &[FieldRule] = &[
    rule(O, "apiVersion", Honoured, "selects the object type"),
    rule(O, "kind", Honoured, "selects the object type"),
    rule(O, "metadata", NoBehaviour, "object metadata"),
    rule(
        O,
        "metadata.name",
        Honoured,
        "the workload's name in steps and reports; replicas are <name>-<i>",
    ),
    rule(
        O,
        "metadata.annotations",
        Honoured,
        "parity.agl.io/* annotations wire the CAN buses; others have no behaviour",
    ),
    rule(
        O,
        "spec.replicas",
        Honoured,
        "that many pods on the bus, each with its own logs",
    ),
    rule(
        O,
        "spec.selector",
        NoBehaviour,
        "controllers select their own pods",
    ),
    rule(
        O,
        "spec.strategy",
        NoBehaviour,
        "rollouts do not happen within a scenario",
    ),
    rule(
        O,
        "spec.updateStrategy",
        NoBehaviour,
        "rollouts do not happen within a scenario",
    ),
    rule(O, "spec.minReadySeconds", NoBehaviour, "rollout pacing"),
    rule(O, "spec.progressDeadlineSeconds", NoBehaviour, "rollout pacing"),
    rule(O, "spec.revisionHistoryLimit", NoBehaviour, "rollout history"),
    rule(O, "spec.template.metadata", NoBehaviour, "pod metadata"),
    rule(
        O,
        "spec.template.metadata.annotations",
        Honoured,
        "parity.agl.io/* annotations wire the CAN buses; others have no behaviour",
    ),
    rule(
        P,
        "restartPolicy",
        Honoured,
        "the supervisor's restart policy, with Kubernetes' back-off",
    ),
    rule(
        P,
        "terminationGracePeriodSeconds",
        Honoured,
        "SIGTERM, then SIGKILL after the grace period",
    ),
    rule(
        P,
        "initContainers",
        Honoured,
        "run to completion in order before the app containers; restartPolicy Always makes a native sidecar",
    ),
    rule(
        P,
        "containers",
        Honoured,
        "each container is supervised on the pod's buses",
    ),
    rule(
        P,
        "volumes",
        Enforced(E::Never),
        "this volume type is not provided: not mounted",
    ),
    rule(P, "volumes.name", Honoured, "named by volumeMounts"),
    rule(
        P,
        "volumes.configMap",
        Enforced(E::Volumes),
        "the ConfigMap's keys as files",
    ),
    rule(
        P,
        "volumes.secret",
        Enforced(E::Volumes),
        "the Secret's keys as files",
    ),
    rule(
        P,
        "volumes.emptyDir",
        Enforced(E::Volumes),
        "an empty directory shared by the pod's containers",
    ),
    rule(P, "volumes.emptyDir.medium", NoBehaviour, "storage medium"),
    rule(
        P,
        "volumes.emptyDir.sizeLimit",
        Enforced(E::Never),
        "size limits are not applied",
    ),
    rule(
        P,
        "securityContext",
        Enforced(E::Never),
        "pod security settings beyond the user are not applied",
    ),
    rule(
        P,
        "securityContext.runAsUser",
        Enforced(E::RunAsUser),
        "the processes' user",
    ),
    rule(
        P,
        "securityContext.runAsGroup",
        Enforced(E::RunAsUser),
        "the processes' group",
    ),
    rule(
        P,
        "securityContext.runAsNonRoot",
        Enforced(E::RunAsUser),
        "refuses to run as root",
    ),
    rule(
        P,
        "securityContext.fsGroupChangePolicy",
        NoBehaviour,
        "volume ownership on a node",
    ),
    rule(P, "automountServiceAccountToken", NoBehaviour, "no API server"),
    rule(P, "serviceAccountName", NoBehaviour, "no API server"),
    rule(P, "dnsPolicy", NoBehaviour, "workloads have no network"),
    rule(P, "dnsConfig", NoBehaviour, "workloads have no network"),
    rule(
        P,
        "hostNetwork",
        NoBehaviour,
        "workloads have no IP network; CAN is wired by the framework",
    ),
    rule(P, "hostname", NoBehaviour, "workloads have no network"),
    rule(P, "subdomain", NoBehaviour, "workloads have no network"),
    rule(P, "setHostnameAsFQDN", NoBehaviour, "workloads have no network"),
    rule(P, "enableServiceLinks", NoBehaviour, "no services"),
    rule(
        P,
        "shareProcessNamespace",
        NoBehaviour,
        "containers do not signal each other",
    ),
    rule(P, "nodeSelector", NoBehaviour, "scheduling"),
    rule(P, "nodeName", NoBehaviour, "scheduling"),
    rule(P, "affinity", NoBehaviour, "scheduling"),
    rule(P, "tolerations", NoBehaviour, "scheduling"),
    rule(P, "topologySpreadConstraints", NoBehaviour, "scheduling"),
    rule(P, "priorityClassName", NoBehaviour, "scheduling"),
    rule(P, "priority", NoBehaviour, "scheduling"),
    rule(P, "schedulerName", NoBehaviour, "scheduling"),
    rule(P, "imagePullSecrets", NoBehaviour, "images are local"),
    rule(P, "hostAliases", NoBehaviour, "workloads have no network"),
    rule(C, "name", Honoured, "names the container in steps and logs"),
    rule(
        C,
        "image",
        Honoured,
        "the workload: an executable or a container image of the project",
    ),
    rule(C, "command", Honoured, "entrypoint override"),
    rule(C, "args", Honoured, "arguments"),
    rule(
        C,
        "env",
        Honoured,
        "environment, valueFrom ConfigMap/Secret keys resolved",
    ),
    rule(
        C,
        "envFrom",
        Honoured,
        "every key of the ConfigMap/Secret, with its prefix",
    ),
    rule(
        C,
        "restartPolicy",
        Honoured,
        "Always on an init container: a native sidecar",
    ),
    rule(C, "readinessProbe", Honoured, "exec probe: gates readiness"),
    rule(
        C,
        "livenessProbe",
        Honoured,
        "exec probe: failureThreshold failures restart the container",
    ),
    rule(
        C,
        "startupProbe",
        Honoured,
        "exec probe: gates the other probes; failing it restarts the container",
    ),
    rule(
        C,
        "readinessProbe.terminationGracePeriodSeconds",
        NoBehaviour,
        "probe-level grace",
    ),
    rule(
        C,
        "livenessProbe.terminationGracePeriodSeconds",
        NoBehaviour,
        "probe-level grace",
    ),
    rule(
        C,
        "startupProbe.terminationGracePeriodSeconds",
        NoBehaviour,
        "probe-level grace",
    ),
    rule(
        C,
        "volumeMounts",
        Enforced(E::Volumes),
        "configMap, secret and emptyDir volumes mounted as files",
    ),
    rule(C, "resources", NoBehaviour, "resource settings"),
    rule(C, "resources.requests", NoBehaviour, "scheduling only"),
    rule(
        C,
        "resources.limits.memory",
        Enforced(E::MemoryLimit),
        "memory limit",
    ),
    rule(C, "resources.limits.cpu", Enforced(E::CpuLimit), "CPU quota"),
    rule(
        C,
        "resources.limits.k8s.collabora.com/socketcan-*",
        Honoured,
        "k8s-socketcan device plugin: joins that CAN bus",
    ),
    rule(
        C,
        "securityContext",
        Enforced(E::Never),
        "capabilities and privilege settings are not applied",
    ),
    rule(
        C,
        "securityContext.runAsUser",
        Enforced(E::RunAsUser),
        "the process's user",
    ),
    rule(
        C,
        "securityContext.runAsGroup",
        Enforced(E::RunAsUser),
        "the process's group",
    ),
    rule(
        C,
        "securityContext.runAsNonRoot",
        Enforced(E::RunAsUser),
        "refuses to run as root",
    ),
    rule(
        C,
        "securityContext.readOnlyRootFilesystem",
        Enforced(E::ReadOnlyRoot),
        "read-only root filesystem",
    ),
    rule(C, "imagePullPolicy", NoBehaviour, "images are local"),
    rule(C, "ports", NoBehaviour, "workloads have no IP network"),
    rule(
        C,
        "lifecycle",
        Enforced(E::Never),
        "postStart/preStop hooks are not run",
    ),
    rule(
        C,
        "workingDir",
        Enforced(E::Never),
        "each container gets its own empty working directory",
    ),
    rule(C, "terminationMessagePath", NoBehaviour, "no API server"),
    rule(C, "terminationMessagePolicy", NoBehaviour, "no API server"),
    rule(C, "stdin", NoBehaviour, "stdin is /dev/null"),
    rule(C, "stdinOnce", NoBehaviour, "stdin is /dev/null"),
    rule(C, "tty", NoBehaviour, "no terminal"),
];

/// A field a document sets, with the rule that classifies it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldUse {
    /// The field path as written, list indexes as `[]` (`spec.template.spec.containers[].image`).
    pub path: String,
    pub class: FieldClass,
    pub note: String,
}

impl FieldUse {
    /// What happens to this field in an environment that offers `enforces`.
    pub fn fate(&self, enforces: &[Enforcement]) -> Fate {
        match self.class {
            FieldClass::Honoured => Fate::Honoured,
            FieldClass::NoBehaviour => Fate::NoBehaviour,
            FieldClass::Enforced(e) if enforces.contains(&e) => Fate::Honoured,
            FieldClass::Enforced(_) => Fate::NotEnforced,
        }
    }
}

/// A field's fate in one environment, as the report shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Honoured,
    NoBehaviour,
    NotEnforced,
}

impl Fate {
    pub fn label(self) -> &'static str {
        match self {
            Fate::Honoured => "honoured",
            Fate::NoBehaviour => "no behaviour here",
            Fate::NotEnforced => "not enforced",
        }
    }
}

/// The field table of one workload, for the run report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadFields {
    pub name: String,
    pub kind: String,
    /// `file#document`.
    pub source: String,
    pub fields: Vec<FieldUse>,
}

/// What the run report says about the project's manifests: every workload's field table, and the objects no
/// environment deploys.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestSummary {
    pub workloads: Vec<WorkloadFields>,
    /// `kind name (file#document)` of every object that is not deployed.
    pub not_deployed: Vec<String>,
}

/// Classifies the field at `path` (components, list indexes as `[]`) of a document whose pod spec is at
/// `pod_prefix` (`["spec"]` for a Pod, `["spec", "template", "spec"]` for a Deployment).
pub fn classify(path: &[String], pod_prefix: &[&str]) -> (FieldClass, &'static str) {
    let names: Vec<&str> = path.iter().map(String::as_str).filter(|c| *c != "[]").collect();
    let (scope, rel): (Scope, &[&str]) = if names.starts_with(pod_prefix) && names.len() > pod_prefix.len() {
        let rest = &names[pod_prefix.len()..];
        match rest.first() {
            Some(&("containers" | "initContainers")) if rest.len() > 1 => (Scope::Container, &rest[1..]),
            _ => (Scope::Pod, rest),
        }
    } else {
        (Scope::Object, &names[..])
    };
    let mut best: Option<(usize, &FieldRule)> = None;
    for r in RULES.iter().filter(|r| r.scope == scope) {
        let parts = split_rule_path(r.path);
        if parts.len() <= rel.len()
            && parts.iter().zip(rel).all(|(p, n)| component_matches(p, n))
            && best.is_none_or(|(len, _)| parts.len() > len)
        {
            best = Some((parts.len(), r));
        }
    }
    match best {
        Some((_, r)) => (r.class, r.note),
        None => (FieldClass::NoBehaviour, "no behaviour on a CAN bus"),
    }
}

/// Splits a rule path on dots, keeping a device-plugin resource name (`k8s.collabora.com/socketcan-*`) whole.
fn split_rule_path(path: &str) -> Vec<&str> {
    match path.find("k8s.collabora.com/") {
        Some(i) => {
            let mut parts: Vec<&str> = path[..i].split('.').filter(|p| !p.is_empty()).collect();
            parts.push(&path[i..]);
            parts
        }
        None => path.split('.').collect(),
    }
}

fn component_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Maps whose keys are data, not schema fields: a field path stops at them.
const OPAQUE: &[&str] = &[
    "labels",
    "annotations",
    "matchLabels",
    "nodeSelector",
    "data",
    "stringData",
];

/// Every set field of a document (a path per leaf, list indexes as `[]`), deduplicated, in document order.
pub fn set_fields(value: &serde_yaml::Value) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn walk(value: &serde_yaml::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    use serde_yaml::Value;
    let opaque = path.last().is_some_and(|l| OPAQUE.contains(&l.as_str()));
    let limits = path.len() >= 2 && path[path.len() - 1] == "limits" && path[path.len() - 2] == "resources";
    match value {
        Value::Mapping(map) if !opaque && !map.is_empty() => {
            for (k, v) in map {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                path.push(key);
                if limits {
                    // Resource names are leaves (`memory`, `k8s.collabora.com/socketcan-vehicle`).
                    push_unique(out, path.clone());
                } else {
                    walk(v, path, out);
                }
                path.pop();
            }
        }
        Value::Sequence(items)
            if !items.is_empty() && !path.last().is_some_and(|l| l == "command" || l == "args") =>
        {
            path.push("[]".into());
            for item in items {
                walk(item, path, out);
            }
            path.pop();
        }
        Value::Tagged(t) => walk(&t.value, path, out),
        _ => {
            if !path.is_empty() {
                push_unique(out, path.clone());
            }
        }
    }
}

fn push_unique(out: &mut Vec<Vec<String>>, path: Vec<String>) {
    if !out.contains(&path) {
        out.push(path);
    }
}

/// Displays a path as `spec.containers[].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for c in path {
        if c == "[]" {
            s.push_str("[]");
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(c);
        }
    }
    s
}

/// The field table as Markdown (`docs/manifest-fields.md`).
pub fn markdown_table() -> String {
    let scope = |s: Scope| match s {
        Scope::Object => "object",
        Scope::Pod => "pod spec",
        Scope::Container => "container",
    };
    let class = |c: FieldClass| match c {
        FieldClass::Honoured => "honoured".to_string(),
        FieldClass::NoBehaviour => "no behaviour here".to_string(),
        FieldClass::Enforced(Enforcement::Never) => "not enforced (any environment)".to_string(),
        FieldClass::Enforced(e) => {
            let by: Vec<&str> = ENFORCED_BY
                .iter()
                .filter(|(_, es)| es.contains(&e))
                .map(|(env, _)| *env)
                .collect();
            format!("honoured in {}; not enforced elsewhere", by.join(", "))
        }
    };
    let mut md = String::from(
        "# Manifest fields: what each environment does with them\n\n\
         Generated from `harness/src/manifest/fields.rs` (`RULES`); do not edit by hand.\n\n\
         A field matches the row with the longest path prefix; a schema field no row names has no behaviour \
         here. The pod spec is `spec` of a Pod and `spec.template.spec` of a Deployment, StatefulSet, \
         DaemonSet, ReplicaSet or Job. A field outside the Kubernetes schema is an error naming file, \
         document and field path. Each run report lists, per workload and environment, the fields its \
         manifest sets and their fate.\n\n| scope | field | class | what happens |\n|---|---|---|---|\n",
    );
    for r in RULES {
        md.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            scope(r.scope),
            r.path,
            class(r.class),
            r.note
        ));
    }
    md
}

/// Which environment kind enforces what: the one list the environments' `Environment::enforces` and the
/// docs read (kinds not named enforce nothing beyond the honoured fields).
pub const ENFORCED_BY: &[(&str, &[Enforcement])] = &[
    (
        "container",
        &[
            Enforcement::MemoryLimit,
            Enforcement::CpuLimit,
            Enforcement::RunAsUser,
            Enforcement::ReadOnlyRoot,
            Enforcement::Volumes,
        ],
    ),
    (
        "kube",
        &[
            Enforcement::MemoryLimit,
            Enforcement::CpuLimit,
            Enforcement::RunAsUser,
            Enforcement::ReadOnlyRoot,
            Enforcement::Volumes,
        ],
    ),
    (
        "vm",
        &[
            Enforcement::MemoryLimit,
            Enforcement::ReadOnlyRoot,
            Enforcement::Volumes,
        ],
    ),
];

/// What environment kind `kind` enforces (see [`ENFORCED_BY`]).
pub fn enforced_by(kind: &str) -> Vec<Enforcement> {
    ENFORCED_BY
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, e)| e.to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_table_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/manifest-fields.md");
        let expected = markdown_table();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "{} is stale: run `UPDATE_DOCS=1 cargo test -p agl-parity --lib docs_table`",
            path.display()
        );
    }

    fn class_of(path: &str, prefix: &[&str]) -> FieldClass {
        let parts: Vec<String> = path.split('.').map(str::to_string).collect();
        classify(&parts, prefix).0
    }

    #[test]
    fn longest_prefix_wins_and_scopes_follow_the_pod_prefix() {
        let deploy = ["spec", "template", "spec"];
        assert_eq!(class_of("spec.replicas", &deploy), Honoured);
        assert_eq!(class_of("spec.minReadySeconds", &deploy), NoBehaviour);
        assert_eq!(
            class_of(
                "spec.template.spec.containers.[].resources.limits.memory",
                &deploy
            ),
            Enforced(E::MemoryLimit)
        );
        assert_eq!(
            class_of(
                "spec.template.spec.containers.[].securityContext.privileged",
                &deploy
            ),
            Enforced(E::Never)
        );
        assert_eq!(
            class_of(
                "spec.template.spec.containers.[].securityContext.readOnlyRootFilesystem",
                &deploy
            ),
            Enforced(E::ReadOnlyRoot)
        );
        assert_eq!(class_of("spec.restartPolicy", &["spec"]), Honoured);
        assert_eq!(class_of("spec.dnsPolicy", &["spec"]), NoBehaviour);
        assert_eq!(
            class_of("spec.volumes.[].hostPath.path", &["spec"]),
            Enforced(E::Never)
        );
        assert_eq!(
            class_of("spec.volumes.[].configMap.name", &["spec"]),
            Enforced(E::Volumes)
        );
    }

    #[test]
    fn device_plugin_resource_is_one_component() {
        let parts: Vec<String> = [
            "spec",
            "containers",
            "[]",
            "resources",
            "limits",
            "k8s.collabora.com/socketcan-vehicle",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(classify(&parts, &["spec"]).0, Honoured);
    }

    #[test]
    fn set_fields_stop_at_data_maps_and_lists_of_strings() {
        let doc: serde_yaml::Value = serde_yaml::from_str(
            "metadata: {labels: {a: b, c: d}}\nspec:\n  containers:\n    - {name: x, args: [a, b], resources: {limits: {k8s.collabora.com/socketcan-v: 1}}}\n    - {name: y}\n",
        )
        .unwrap();
        let shown: Vec<String> = set_fields(&doc).iter().map(|p| display_path(p)).collect();
        assert_eq!(
            shown,
            vec![
                "metadata.labels",
                "spec.containers[].name",
                "spec.containers[].args",
                "spec.containers[].resources.limits.k8s.collabora.com/socketcan-v",
            ]
        );
    }
}
