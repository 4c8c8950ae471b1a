//! The YAML the kube environment gives `podman kube play`: the workload's document as the manifest has it,
//! plus only what an orchestrator's device plugin and namespace would add.
//!
//! What is added or changed, and nothing else:
//! * **Name**: `metadata.name` gets the scenario's suffix (`door-locks` → `door-locks-<run>-s<n>`), the way
//!   a namespace per scenario would keep scenarios apart; podman has no namespaces. The ConfigMaps and
//!   Secrets get the same suffix, and so do the references to them: podman keeps Secrets, and the volumes
//!   it makes of ConfigMaps, as global objects named after them.
//! * **Labels** on the pod template: the run id and the harness's state root, for teardown and sweeps.
//! * **The bus**, as a device plugin would give it: a `hostPath` volume with the scenario's hub sockets,
//!   the `CAN_BUS` variables, and with emulated SocketCAN the `pod-init` binary (`hostPath`, read-only) in
//!   front of each container's command line.
//! * **Images**: `imagePullPolicy: Never` — the images are in podman's store already, as on an air-gapped
//!   node that was given them; nothing is pulled.
//!
//! The ConfigMaps and Secrets of the workload's own file and of the other manifest files beside it go into
//! the same play file, so podman resolves `envFrom`, `valueFrom` and configMap volumes itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

/// The kinds podman 4.3 plays as pods.
pub const PLAYED_KINDS: &[&str] = &["Pod", "Deployment"];

/// A hub socket directory mounted into every container.
#[derive(Debug, Clone)]
pub struct BusMount {
    /// The host directory holding the hub's socket(s).
    pub host_dir: PathBuf,
    /// Where it appears in the containers.
    pub mount_path: String,
}

/// What the harness adds to the workload's document.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// Appended to `metadata.name` and to the ConfigMaps' and Secrets' names: `-<run>-s<n>`.
    pub suffix: String,
    pub labels: Vec<(String, String)>,
    pub bus_mounts: Vec<BusMount>,
    /// `CAN_BUS` and `CAN_BUS_<NAME>`, for every container.
    pub env: Vec<(String, String)>,
    /// With emulated SocketCAN: the host's `pod-init` and the words before each command line
    /// (`/agl-pod-init --can-emulate IF=ENDPOINT,... --`).
    pub emulation: Option<(PathBuf, Vec<String>)>,
    /// Each container's full command line (its image's entrypoint and cmd under `command`/`args`), needed
    /// to put the emulation in front of it.
    pub argv: BTreeMap<String, Vec<String>>,
}

/// Where `pod-init` appears in the containers.
pub const POD_INIT_PATH: &str = "/agl-pod-init";

/// Why the play file could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlayError {
    #[error("{}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: document {document}: {reason}", .path.display())]
    Document {
        path: PathBuf,
        document: usize,
        reason: String,
    },
    #[error("podman kube play (4.3) plays Pod and Deployment, not {kind}")]
    Kind { kind: String },
}

/// The global podman objects a play makes beside its pods, to remove with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayObjects {
    /// Podman secrets (the Secrets, suffixed).
    pub secrets: Vec<String>,
    /// Podman volumes (one per ConfigMap a volume mounts, suffixed).
    pub volumes: Vec<String>,
}

/// The play file of one workload: its ConfigMaps and Secrets, then its document with the wiring.
/// Returns the YAML and the global objects it makes.
pub fn play_yaml(
    source: &Path,
    document: usize,
    wiring: &Wiring,
) -> Result<(String, PlayObjects), PlayError> {
    let documents = read_documents(source)?;
    let doc_err = |reason: String| PlayError::Document {
        path: source.to_path_buf(),
        document,
        reason,
    };
    let mut workload = documents
        .get(document.wrapping_sub(1))
        .cloned()
        .flatten()
        .ok_or_else(|| doc_err("no such document".into()))?;
    let kind = workload
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !PLAYED_KINDS.contains(&kind.as_str()) {
        return Err(PlayError::Kind { kind });
    }
    // ConfigMaps and Secrets: this file's and its siblings'.
    let mut config: Vec<Value> = documents
        .iter()
        .flatten()
        .filter(|d| is_config(d))
        .cloned()
        .collect();
    for sibling in siblings(source) {
        if let Ok(docs) = read_documents(&sibling) {
            config.extend(docs.into_iter().flatten().filter(is_config));
        }
    }
    let mut objects = PlayObjects::default();
    for object in config.iter_mut() {
        let secret = kind_of(object) == "Secret";
        if let Some(name) = object.get_mut("metadata").and_then(|m| m.get_mut("name")) {
            let renamed = format!("{}{}", name.as_str().unwrap_or_default(), wiring.suffix);
            if secret {
                objects.secrets.push(renamed.clone());
            }
            *name = Value::String(renamed);
        }
    }
    objects.volumes = wire(&mut workload, &kind, wiring).map_err(doc_err)?;
    let mut yaml = String::new();
    for object in config.iter().chain(std::iter::once(&workload)) {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(object).map_err(|e| doc_err(e.to_string()))?);
    }
    Ok((yaml, objects))
}

/// The documents of a manifest file (`None` for an empty one), numbered like the manifest loader's.
fn read_documents(path: &Path) -> Result<Vec<Option<Value>>, PlayError> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).map_err(|e| PlayError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| PlayError::Document {
            path: path.to_path_buf(),
            document: index + 1,
            reason: e.to_string(),
        })?;
        out.push((!value.is_null()).then_some(value));
    }
    Ok(out)
}

/// The other manifest files in the directory of `source`.
fn siblings(source: &Path) -> Vec<PathBuf> {
    let Some(dir) = source.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != source && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

fn kind_of(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or_default()
}

fn is_config(doc: &Value) -> bool {
    matches!(kind_of(doc), "ConfigMap" | "Secret")
}

/// Adds the wiring to a Pod or Deployment document; returns the (suffixed) ConfigMaps its volumes mount.
fn wire(doc: &mut Value, kind: &str, wiring: &Wiring) -> Result<Vec<String>, String> {
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or("metadata.name is missing")?
        .to_string();
    mapping_at(doc, &["metadata"])?.insert("name".into(), Value::String(format!("{name}{}", wiring.suffix)));
    let template: &[&str] = if kind == "Pod" { &[] } else { &["spec", "template"] };
    let mut meta_path = template.to_vec();
    meta_path.extend(["metadata", "labels"]);
    let labels = mapping_at(doc, &meta_path)?;
    for (k, v) in &wiring.labels {
        labels.insert(k.as_str().into(), v.as_str().into());
    }
    let mut spec_path = template.to_vec();
    spec_path.push("spec");
    let spec = mapping_at(doc, &spec_path)?;
    let config_volumes = rename_volume_sources(spec, &wiring.suffix);
    let volumes = sequence_in(spec, "volumes")?;
    for (i, mount) in wiring.bus_mounts.iter().enumerate() {
        volumes.push(host_path(
            &format!("agl-parity-bus-{i}"),
            &mount.host_dir,
            "Directory",
        ));
    }
    if let Some((pod_init, _)) = &wiring.emulation {
        volumes.push(host_path("agl-parity-pod-init", pod_init, "File"));
    }
    for list in ["initContainers", "containers"] {
        let Some(Value::Sequence(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers.iter_mut() {
            wire_container(container, wiring, &suffixed(&wiring.suffix))?;
        }
    }
    Ok(config_volumes)
}

/// Appends the suffix to the `name` of a ConfigMap or Secret reference.
fn suffixed(suffix: &str) -> impl Fn(&mut Value) + '_ {
    move |reference: &mut Value| {
        if let Some(Value::String(name)) = reference.get_mut("name") {
            name.push_str(suffix);
        }
    }
}

/// Renames the ConfigMaps and Secrets the pod's volumes name; returns the ConfigMap ones.
fn rename_volume_sources(spec: &mut Mapping, suffix: &str) -> Vec<String> {
    let mut config_maps = Vec::new();
    let Some(Value::Sequence(volumes)) = spec.get_mut("volumes") else {
        return config_maps;
    };
    for volume in volumes {
        if let Some(Value::String(name)) = volume.get_mut("secret").and_then(|s| s.get_mut("secretName")) {
            name.push_str(suffix);
        }
        if let Some(Value::String(name)) = volume.get_mut("configMap").and_then(|c| c.get_mut("name")) {
            name.push_str(suffix);
            config_maps.push(name.clone());
        }
    }
    config_maps
}

fn wire_container(
    container: &mut Value,
    wiring: &Wiring,
    rename: &impl Fn(&mut Value),
) -> Result<(), String> {
    let name = container
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a container has no name")?
        .to_string();
    let map = container.as_mapping_mut().ok_or("a container is not a mapping")?;
    map.insert("imagePullPolicy".into(), "Never".into());
    let env = sequence_in(map, "env")?;
    for var in env.iter_mut() {
        for kind in ["secretKeyRef", "configMapKeyRef"] {
            if let Some(reference) = var.get_mut("valueFrom").and_then(|v| v.get_mut(kind)) {
                rename(reference);
            }
        }
    }
    for (k, v) in &wiring.env {
        let mut var = Mapping::new();
        var.insert("name".into(), k.as_str().into());
        var.insert("value".into(), v.as_str().into());
        env.push(Value::Mapping(var));
    }
    if let Some(Value::Sequence(from)) = map.get_mut("envFrom") {
        for source in from.iter_mut() {
            for kind in ["secretRef", "configMapRef"] {
                if let Some(reference) = source.get_mut(kind) {
                    rename(reference);
                }
            }
        }
    }
    let mounts = sequence_in(map, "volumeMounts")?;
    for (i, mount) in wiring.bus_mounts.iter().enumerate() {
        mounts.push(volume_mount(
            &format!("agl-parity-bus-{i}"),
            &mount.mount_path,
            false,
        ));
    }
    if let Some((_, prefix)) = &wiring.emulation {
        mounts.push(volume_mount("agl-parity-pod-init", POD_INIT_PATH, true));
        let argv = wiring
            .argv
            .get(&name)
            .ok_or_else(|| format!("container `{name}`: no command line to run under the emulation"))?;
        let command: Vec<Value> = prefix
            .iter()
            .chain(argv)
            .map(|w| Value::String(w.clone()))
            .collect();
        map.insert("command".into(), Value::Sequence(command));
        map.remove("args");
    }
    Ok(())
}

fn host_path(name: &str, path: &Path, kind: &str) -> Value {
    let mut source = Mapping::new();
    source.insert("path".into(), path.display().to_string().into());
    source.insert("type".into(), kind.into());
    let mut volume = Mapping::new();
    volume.insert("name".into(), name.into());
    volume.insert("hostPath".into(), Value::Mapping(source));
    Value::Mapping(volume)
}

fn volume_mount(name: &str, path: &str, read_only: bool) -> Value {
    let mut mount = Mapping::new();
    mount.insert("name".into(), name.into());
    mount.insert("mountPath".into(), path.into());
    if read_only {
        mount.insert("readOnly".into(), true.into());
    }
    Value::Mapping(mount)
}

/// The mapping at `path` (created when missing).
fn mapping_at<'a>(doc: &'a mut Value, path: &[&str]) -> Result<&'a mut Mapping, String> {
    let mut at = doc;
    for (depth, key) in path.iter().enumerate() {
        let map = at
            .as_mapping_mut()
            .ok_or_else(|| format!("{} is not a mapping", path[..depth].join(".")))?;
        at = map
            .entry((*key).into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if at.is_null() {
            *at = Value::Mapping(Mapping::new());
        }
    }
    at.as_mapping_mut()
        .ok_or_else(|| format!("{} is not a mapping", path.join(".")))
}

/// The sequence under `key` (created when missing).
fn sequence_in<'a>(map: &'a mut Mapping, key: &str) -> Result<&'a mut Vec<Value>, String> {
    let at = map
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if at.is_null() {
        *at = Value::Sequence(Vec::new());
    }
    at.as_sequence_mut().ok_or_else(|| format!("{key} is not a list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring(emulated: bool) -> Wiring {
        Wiring {
            suffix: "-r1-s0".into(),
            labels: vec![("agl.parity.run".into(), "r1".into())],
            bus_mounts: vec![BusMount {
                host_dir: "/state/s0".into(),
                mount_path: "/run/agl-parity/bus-0".into(),
            }],
            env: vec![("CAN_BUS".into(), "socketcan:vcan0".into())],
            emulation: emulated.then(|| {
                (
                    PathBuf::from("/host/pod-init"),
                    vec![
                        POD_INIT_PATH.into(),
                        "--can-emulate".into(),
                        "vcan0=unix:/x".into(),
                        "--".into(),
                    ],
                )
            }),
            argv: [("app".to_string(), vec!["/app".to_string(), "--fast".to_string()])].into(),
        }
    }

    const DEPLOYMENT: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {A: '1'}
---
apiVersion: v1
kind: Secret
metadata: {name: key}
stringData: {K: s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: dep}
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: app
        image: agl/app:1
        args: [--fast]
        env: [{name: K, valueFrom: {secretKeyRef: {name: key, key: K}}}]
        envFrom: [{configMapRef: {name: cfg}}]
      volumes:
      - {name: files, configMap: {name: cfg}}
"#;

    #[test]
    fn a_deployment_keeps_its_fields_and_gets_only_the_wiring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dep.yaml");
        std::fs::write(&path, DEPLOYMENT).unwrap();
        let (yaml, objects) = play_yaml(&path, 3, &wiring(true)).unwrap();
        assert_eq!(objects.secrets, vec!["key-r1-s0".to_string()]);
        assert_eq!(objects.volumes, vec!["cfg-r1-s0".to_string()]);
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 3, "{yaml}");
        let dep = &docs[2];
        assert_eq!(dep["metadata"]["name"], "dep-r1-s0");
        assert_eq!(dep["spec"]["replicas"], 2);
        assert_eq!(
            dep["spec"]["template"]["metadata"]["labels"]["agl.parity.run"],
            "r1"
        );
        let app = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(app["imagePullPolicy"], "Never");
        assert_eq!(app["command"][0], POD_INIT_PATH);
        assert_eq!(app["command"][4], "/app");
        assert_eq!(app["command"][5], "--fast");
        assert!(app.get("args").is_none());
        assert_eq!(app["env"][0]["valueFrom"]["secretKeyRef"]["name"], "key-r1-s0");
        assert_eq!(app["env"][1]["name"], "CAN_BUS");
        assert_eq!(app["envFrom"][0]["configMapRef"]["name"], "cfg-r1-s0");
        assert_eq!(docs[0]["metadata"]["name"], "cfg-r1-s0");
        assert_eq!(
            dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
            "cfg-r1-s0"
        );
        let volumes = &dep["spec"]["template"]["spec"]["volumes"];
        assert_eq!(volumes[1]["hostPath"]["path"], "/state/s0");
        assert_eq!(volumes[2]["hostPath"]["type"], "File");
        assert_eq!(docs[1]["metadata"]["name"], "key-r1-s0");
    }

    #[test]
    fn without_emulation_the_command_line_is_the_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dep.yaml");
        std::fs::write(&path, DEPLOYMENT).unwrap();
        let (yaml, _) = play_yaml(&path, 3, &wiring(false)).unwrap();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let app = &docs[2]["spec"]["template"]["spec"]["containers"][0];
        assert!(app.get("command").is_none());
        assert_eq!(app["args"][0], "--fast");
        assert_eq!(app["volumeMounts"][0]["mountPath"], "/run/agl-parity/bus-0");
    }

    #[test]
    fn kinds_podman_does_not_play_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.yaml");
        std::fs::write(
            &path,
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {}\n",
        )
        .unwrap();
        let err = play_yaml(&path, 1, &wiring(false)).unwrap_err();
        assert!(err.to_string().contains("not Job"), "{err}");
        let err = play_yaml(&path, 4, &wiring(false)).unwrap_err();
        assert!(err.to_string().contains("document 4: no such document"), "{err}");
    }
}
