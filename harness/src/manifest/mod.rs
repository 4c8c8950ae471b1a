//! Kubernetes manifests (what cdk8s synthesizes and k3s applies) read into the workload model.
//!
//! A manifest file holds one or more YAML documents. They are read with the Kubernetes API types
//! (`k8s-openapi`, Kubernetes 1.37 schema) in [`kube`]: `v1` Pod, `apps/v1` Deployment, StatefulSet,
//! DaemonSet and ReplicaSet, and `batch/v1` Job become workloads; `v1` ConfigMap and Secret feed their
//! `env[].valueFrom`, `envFrom` and volumes; any other object is accepted and listed in the report as "not
//! deployed by this environment". A field outside the Kubernetes schema is an error naming the file, the
//! document and the field path. What the framework does with each schema field is the table of
//! [`fields`]: honoured, no behaviour here, or not enforced in some environments.
//!
//! CAN wiring is declared with annotations, which keeps the YAML valid Kubernetes, or with the
//! `k8s-socketcan` device plugin's resources:
//!
//! | declaration | meaning |
//! |---|---|
//! | annotation `parity.agl.io/can-buses` | comma-separated names of the CAN buses the pod joins |
//! | `resources.limits: {k8s.collabora.com/socketcan-<bus>: 1}` | the pod joins `<bus>` (as on a cluster with the device plugin) |
//! | annotation `parity.agl.io/ready-frame` | readiness: the pod is ready once a frame with this id (hex) is seen on its bus |
//!
//! The first bus reaches each container as `CAN_BUS=<endpoint>`, every bus as `CAN_BUS_<NAME>=<endpoint>`.
//!
//! Modules: [`model`] (the workload model), [`error`], [`values`] (single values), [`fields`] (field
//! classes), [`kube`] (Kubernetes objects into the model).

pub mod error;
pub mod fields;
pub mod kube;
pub mod model;
pub mod values;

use std::path::{Path, PathBuf};

pub use error::ManifestError;
pub use fields::{Enforcement, Fate, FieldClass, FieldUse, ManifestSummary, WorkloadFields};
pub use kube::{ANNOTATION_BUSES, ANNOTATION_READY_FRAME, DEVICE_PLUGIN_PREFIX};
pub use model::{
    ContainerSpec, ExecProbe, ImageRef, OtherObject, Readiness, Resources, RestartPolicy, SecuritySpec,
    VolumeMount, VolumeSource, VolumeSpec, WorkloadSpec,
};
pub use values::{parse_can_id, parse_cpu, parse_memory, ValueError};

/// Every manifest of a project, read together so that a workload can use a ConfigMap of another file.
#[derive(Debug, Default)]
pub struct ManifestSet {
    pub workloads: Vec<WorkloadSpec>,
    /// Objects no environment deploys (Service, Namespace, ...).
    pub others: Vec<OtherObject>,
    /// Files or workloads that could not be read.
    pub errors: Vec<ManifestError>,
}

/// Reads every workload of one manifest file (ConfigMaps and Secrets of the same file resolved).
pub fn load(path: &Path) -> Result<Vec<WorkloadSpec>, ManifestError> {
    let text = read(path)?;
    parse(&text, path)
}

/// Parses manifest text; `path` names the source in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<WorkloadSpec>, ManifestError> {
    let documents = kube::documents(text, path)?;
    if documents.is_empty() {
        return Err(ManifestError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut data = kube::DataObjects::default();
    let mut pending = Vec::new();
    for d in documents {
        match d {
            kube::Document::Workload(w) => pending.push(w),
            kube::Document::Data(object) => data.insert(object),
            kube::Document::Other(_) => {}
        }
    }
    pending.iter().map(|w| kube::resolve(w, &data)).collect()
}

/// Reads every manifest file of `paths` (in order); an unreadable file or workload is kept in
/// [`ManifestSet::errors`] and the others are still read.
pub fn load_set(paths: &[PathBuf]) -> ManifestSet {
    let mut set = ManifestSet::default();
    let mut data = kube::DataObjects::default();
    let mut pending = Vec::new();
    for path in paths {
        let documents = match read(path).and_then(|text| kube::documents(&text, path)) {
            Ok(d) if d.is_empty() => {
                set.errors.push(ManifestError::Empty { path: path.clone() });
                continue;
            }
            Ok(d) => d,
            Err(e) => {
                set.errors.push(e);
                continue;
            }
        };
        for d in documents {
            match d {
                kube::Document::Workload(w) => pending.push(w),
                kube::Document::Data(object) => data.insert(object),
                kube::Document::Other(o) => set.others.push(o),
            }
        }
    }
    for w in &pending {
        match kube::resolve(w, &data) {
            Ok(spec) => set.workloads.push(spec),
            Err(e) => set.errors.push(e),
        }
    }
    set
}

/// The report's view of a project's workloads and the objects it does not deploy, file names relative to
/// `root` (the project).
pub fn summarise<'a>(
    workloads: impl IntoIterator<Item = &'a WorkloadSpec>,
    others: &[OtherObject],
    root: &Path,
) -> ManifestSummary {
    let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    ManifestSummary {
        workloads: workloads
            .into_iter()
            .map(|w| WorkloadFields {
                name: w.name.clone(),
                kind: w.kind.clone(),
                source: format!("{}#{}", shown(&w.source), w.document),
                fields: w.fields.clone(),
            })
            .collect(),
        not_deployed: others
            .iter()
            .map(|o| {
                format!(
                    "{} {} ({}#{})",
                    o.kind,
                    if o.name.is_empty() { "(unnamed)" } else { &o.name },
                    shown(&o.source),
                    o.document
                )
            })
            .collect(),
    }
}

fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// A Deployment as cdk8s-plus synthesizes it, every default included, with a ConfigMap feeding envFrom,
    /// an init container, a sidecar, two replicas, a configMap volume and the device-plugin resource.
    const CDK8S: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: wiper-config }
data: { WIPE_INTERVAL_MS: "400", calibration.json: '{"gain": 2}' }
---
apiVersion: v1
kind: Service
metadata: { name: wiper }
spec: { ports: [{ port: 80 }], selector: { app: wiper } }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  labels: { app.kubernetes.io/name: wiper }
  name: wiper
spec:
  minReadySeconds: 0
  progressDeadlineSeconds: 600
  replicas: 2
  revisionHistoryLimit: 10
  selector: { matchLabels: { cdk8s.io/metadata.addr: wiper-c8a2 } }
  strategy: { rollingUpdate: { maxSurge: 25%, maxUnavailable: 25% }, type: RollingUpdate }
  template:
    metadata:
      annotations: { parity.agl.io/ready-frame: "0x200" }
      labels: { cdk8s.io/metadata.addr: wiper-c8a2 }
    spec:
      automountServiceAccountToken: false
      dnsPolicy: ClusterFirst
      hostNetwork: false
      restartPolicy: Always
      securityContext: { fsGroupChangePolicy: Always, runAsNonRoot: true }
      setHostnameAsFQDN: false
      shareProcessNamespace: false
      terminationGracePeriodSeconds: 3
      volumes:
        - name: config
          configMap: { name: wiper-config, items: [{ key: calibration.json, path: cal.json }] }
        - name: scratch
          emptyDir: {}
        - name: host
          hostPath: { path: /etc }
      initContainers:
        - name: calibrate
          image: agl/wiper-calibrate:1
          imagePullPolicy: Always
        - name: logger
          image: agl/can-logger:1
          restartPolicy: Always
      containers:
        - name: wiper
          image: agl/wiper:1.0
          imagePullPolicy: Always
          envFrom: [{ configMapRef: { name: wiper-config } }]
          env:
            - { name: MODE, value: "interval-$(WIPE_INTERVAL_MS)" }
            - name: TICK
              valueFrom: { configMapKeyRef: { name: wiper-config, key: WIPE_INTERVAL_MS } }
            - name: POD
              valueFrom: { fieldRef: { fieldPath: metadata.name } }
          livenessProbe:
            exec: { command: [/wiper, --alive] }
            periodSeconds: 2
          resources:
            limits: { cpu: 1500m, memory: 2048Mi, k8s.collabora.com/socketcan-body: 1 }
            requests: { cpu: 1000m, memory: 512Mi }
          securityContext:
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            runAsUser: 1000
          volumeMounts:
            - { name: config, mountPath: /etc/wiper }
            - { name: scratch, mountPath: /tmp }
            - { name: host, mountPath: /host }
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
        assert_eq!(w.replicas, 1);
        // Kubernetes' default grace period.
        assert_eq!(w.termination_grace, Duration::from_secs(30));
        let c = &w.containers[0];
        assert_eq!(c.image.binary_name(), "hvac-controller");
        assert_eq!(c.image.tag, "1.0");
        assert_eq!(c.env, vec![("HEARTBEAT_MS".to_string(), "100".to_string())]);
        assert_eq!(c.limits.memory_bytes, Some(64 << 20));
        assert_eq!(c.limits.cpu_millis, Some(500));
    }

    #[test]
    fn cdk8s_plus_deployment_with_every_default_is_read() {
        let all = parse_str(CDK8S).unwrap();
        assert_eq!(all.len(), 1, "the ConfigMap and the Service are not workloads");
        let w = &all[0];
        assert_eq!((w.kind.as_str(), w.replicas), ("Deployment", 2));
        assert_eq!(w.replica_name(1), "wiper-1");
        assert_eq!(w.buses, vec!["body"], "from the device-plugin resource");
        assert_eq!(w.termination_grace, Duration::from_secs(3));
        let names: Vec<(&str, bool)> = w
            .init_containers
            .iter()
            .map(|c| (c.name.as_str(), c.sidecar))
            .collect();
        assert_eq!(names, vec![("calibrate", false), ("logger", true)]);
        let c = &w.containers[0];
        let env: std::collections::BTreeMap<_, _> = c.env.iter().cloned().collect();
        assert_eq!(env["WIPE_INTERVAL_MS"], "400");
        assert_eq!(env["MODE"], "interval-400");
        assert_eq!(env["TICK"], "400");
        assert_eq!(env["POD"], "wiper");
        assert_eq!(c.liveness.as_ref().unwrap().period, Duration::from_secs(2));
        assert_eq!(c.liveness.as_ref().unwrap().failure_threshold, 3);
        assert_eq!(
            c.security,
            SecuritySpec {
                run_as_user: Some(1000),
                run_as_group: None,
                run_as_non_root: true,
                read_only_root: true
            }
        );
        // The hostPath volume is not provided: its mount is recorded in the field table, not made.
        let mounts: Vec<&str> = c.mounts.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(mounts, vec!["/etc/wiper", "/tmp"]);
        match &w.volume("config").unwrap().source {
            VolumeSource::Files { files, mode } => {
                assert_eq!(files["cal.json"], br#"{"gain": 2}"#.to_vec());
                assert_eq!(*mode, 0o644);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_set_field_is_classified() {
        let w = &parse_str(CDK8S).unwrap()[0];
        let class = |path: &str| {
            w.fields
                .iter()
                .find(|f| f.path == path)
                .map(|f| f.class)
                .unwrap_or_else(|| panic!("{path} not listed: {:?}", w.fields))
        };
        assert_eq!(class("spec.replicas"), FieldClass::Honoured);
        assert_eq!(class("spec.minReadySeconds"), FieldClass::NoBehaviour);
        assert_eq!(
            class("spec.strategy.rollingUpdate.maxSurge"),
            FieldClass::NoBehaviour
        );
        assert_eq!(class("spec.template.spec.dnsPolicy"), FieldClass::NoBehaviour);
        assert_eq!(
            class("spec.template.spec.containers[].env[].valueFrom.configMapKeyRef.key"),
            FieldClass::Honoured
        );
        assert_eq!(
            class("spec.template.spec.containers[].resources.limits.memory"),
            FieldClass::Enforced(Enforcement::MemoryLimit)
        );
        assert_eq!(
            class("spec.template.spec.containers[].resources.limits.k8s.collabora.com/socketcan-body"),
            FieldClass::Honoured
        );
        assert_eq!(
            class("spec.template.spec.containers[].securityContext.privileged"),
            FieldClass::Enforced(Enforcement::Never)
        );
        assert_eq!(
            class("spec.template.spec.volumes[].hostPath.path"),
            FieldClass::Enforced(Enforcement::Never)
        );
        assert_eq!(
            class("spec.template.spec.initContainers[].restartPolicy"),
            FieldClass::Honoured
        );
    }

    #[test]
    fn a_field_outside_the_schema_names_file_document_and_path() {
        let text = CDK8S.replace(
            "      dnsPolicy: ClusterFirst",
            "      dnsPolicy: ClusterFirst\n      dnsPolcy: x",
        );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("fixtures/test.yaml: document 3: spec.template.spec.dnsPolcy"),
            "{e}"
        );
        assert!(
            e.contains("unknown field `dnsPolcy`: not in the Kubernetes schema"),
            "{e}"
        );
        let text = POD.replace("      args:", "      livenessProb: {}\n      args:");
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(e.contains("document 1: spec.containers[0].livenessProb"), "{e}");
        // Objects that are not deployed are still checked against their schema.
        let text = CDK8S.replace("spec: { ports: [{ port: 80 }]", "spec: { portz: [{ port: 80 }]");
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(e.contains("document 2: spec.portz"), "{e}");
        // A type error names its path too.
        let e = parse_str(&POD.replace("restartPolicy: OnFailure", "restartPolicy: [x]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.restartPolicy"), "{e}");
    }

    #[test]
    fn other_kinds_are_listed_not_deployed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, CDK8S.split("---").nth(2).unwrap()).unwrap();
        let config = CDK8S.split("---").next().unwrap();
        std::fs::write(
            &b,
            format!("{config}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: agl}}\n---\napiVersion: example.com/v1\nkind: CanGateway\nmetadata: {{name: gw}}\nspec: {{anything: 1}}\n"),
        )
        .unwrap();
        // The Deployment in a.yaml reads the ConfigMap of b.yaml.
        let set = load_set(&[a, b]);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        assert_eq!(set.workloads.len(), 1);
        let kinds: Vec<&str> = set.others.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, vec!["Namespace", "CanGateway"]);
    }

    #[test]
    fn wrong_values_name_their_field() {
        let error_of = |text: &str| parse_str(text).unwrap_err().to_string();
        assert!(error_of(&POD.replace("apiVersion: v1", "apiVersion: apps/v1")).contains("apiVersion"));
        let e = error_of(&POD.replace("memory: 64Mi", "memory: lots"));
        assert!(e.contains("spec.containers[0].resources.limits.memory"), "{e}");
        let e = error_of(&POD.replace("restartPolicy: OnFailure", "restartPolicy: Sometimes"));
        assert!(e.contains("spec.restartPolicy"), "{e}");
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
        let e = error_of(&CDK8S.replace("key: WIPE_INTERVAL_MS }", "key: NOPE }"));
        assert!(
            e.contains("env[1].valueFrom: ConfigMap `wiper-config` key `NOPE` is not defined"),
            "{e}"
        );
        let e = error_of(&CDK8S.replace("replicas: 2", "replicas: 500"));
        assert!(e.contains("spec.replicas: 500 replicas"), "{e}");
        let e = error_of(&CDK8S.replace("exec: { command: [/wiper, --alive] }", "httpGet: { port: 80 }"));
        assert!(e.contains("containers[0].livenessProbe: only exec probes"), "{e}");
        let e = error_of(&CDK8S.replace(
            "restartPolicy: Always\n      securityContext",
            "restartPolicy: Never\n      securityContext",
        ));
        assert!(
            e.contains("Deployment's pods must use restartPolicy Always"),
            "{e}"
        );
        let e = error_of(&CDK8S.replace(
            "{ name: scratch, mountPath: /tmp }",
            "{ name: scrach, mountPath: /tmp }",
        ));
        assert!(e.contains("volumeMounts[1].name: no volume `scrach`"), "{e}");
    }

    fn pod_template(extra: &str) -> String {
        format!(
            "  template:\n    metadata: {{ annotations: {{ parity.agl.io/can-buses: vehicle }} }}\n    spec:\n{extra}      containers: [{{ name: c, image: agl/x:1 }}]\n"
        )
    }

    #[test]
    fn every_workload_kind_becomes_pods() {
        let kinds = [
            (
                "apps/v1",
                "StatefulSet",
                "  replicas: 3\n  serviceName: x\n  selector: { matchLabels: { a: b } }\n",
                "",
                3,
                RestartPolicy::Always,
            ),
            (
                "apps/v1",
                "ReplicaSet",
                "  replicas: 2\n  selector: { matchLabels: { a: b } }\n",
                "",
                2,
                RestartPolicy::Always,
            ),
            (
                "apps/v1",
                "DaemonSet",
                "  selector: { matchLabels: { a: b } }\n",
                "",
                1,
                RestartPolicy::Always,
            ),
            (
                "batch/v1",
                "Job",
                "  backoffLimit: 2\n",
                "      restartPolicy: OnFailure\n",
                1,
                RestartPolicy::OnFailure,
            ),
        ];
        for (api, kind, spec, pod_extra, replicas, policy) in kinds {
            let text = format!(
                "apiVersion: {api}\nkind: {kind}\nmetadata: {{ name: w }}\nspec:\n{spec}{}",
                pod_template(pod_extra)
            );
            let w = &parse_str(&text).unwrap_or_else(|e| panic!("{kind}: {e}"))[0];
            assert_eq!(
                (w.kind.as_str(), w.replicas, w.restart_policy),
                (kind, replicas, policy)
            );
        }
        // A Job needs a policy that lets its pods finish.
        let job = format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{ name: w }}\nspec:\n{}",
            pod_template("")
        );
        let e = parse_str(&job).unwrap_err().to_string();
        assert!(
            e.contains("spec.template.spec.restartPolicy: a Job's pods need"),
            "{e}"
        );
    }

    #[test]
    fn secrets_feed_env_and_files() {
        let text = r#"
apiVersion: v1
kind: Secret
metadata: { name: keys }
data: { TOKEN: c2VjcmV0 }
stringData: { pin.txt: "1234" }
---
apiVersion: v1
kind: Pod
metadata: { name: p, annotations: { parity.agl.io/can-buses: vehicle } }
spec:
  volumes: [{ name: k, secret: { secretName: keys, defaultMode: 0400 } }]
  containers:
    - name: c
      image: agl/x:1
      envFrom: [{ secretRef: { name: keys }, prefix: S_ }]
      env: [{ name: T, valueFrom: { secretKeyRef: { name: keys, key: TOKEN } } }]
      volumeMounts: [{ name: k, mountPath: /keys }]
"#;
        let w = &parse_str(text).unwrap()[0];
        let env: std::collections::BTreeMap<_, _> = w.containers[0].env.iter().cloned().collect();
        assert_eq!(env["T"], "secret");
        assert_eq!(env["S_TOKEN"], "secret");
        assert_eq!(env["S_pin.txt"], "1234");
        match &w.volume("k").unwrap().source {
            VolumeSource::Files { files, mode } => {
                assert_eq!(files["pin.txt"], b"1234".to_vec());
                assert_eq!(*mode, 0o400);
            }
            other => panic!("{other:?}"),
        }
        let e = parse_str(&text.replace("secretName: keys", "secretName: nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.volumes[0]: Secret `nope` is not defined"), "{e}");
    }

    #[test]
    fn yaml_syntax_error_has_location() {
        let e = parse_str("apiVersion: v1\nkind: [Pod\n").unwrap_err().to_string();
        assert!(e.contains("fixtures/test.yaml: document 1"), "{e}");
        assert!(e.contains("line"), "{e}");
        assert!(matches!(
            parse_str("# nothing\n"),
            Err(ManifestError::Empty { .. })
        ));
    }

    #[test]
    fn the_sample_manifests_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/manifests");
        let paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let set = load_set(&paths);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        assert_eq!(
            set.workloads.len(),
            7,
            "hvac, body-control, comfort, door-locks, wiper and the two can-utils pods"
        );
        assert_eq!(set.others.len(), 1, "door-locks' Service");
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
