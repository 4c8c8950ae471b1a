//! Pod volumes (configMap, secret, emptyDir) as files on the host, for the environments that mount them:
//! bind mounts into a container, copies into a VM's guest root. One reading of `volumeMounts` (`subPath`,
//! `readOnly`) for every environment.

use std::path::{Path, PathBuf};

use crate::error::InfraError;
use crate::manifest::{ContainerSpec, VolumeSource, WorkloadSpec};

/// One mount of a container: a host file or directory at an absolute path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    pub host: PathBuf,
    /// Absolute path inside the container.
    pub path: String,
    pub read_only: bool,
}

/// Writes the volumes `container` mounts under `pod_dir` (one directory per volume, shared by the pod's
/// containers) and returns its mounts.
pub fn materialise(
    pod: &WorkloadSpec,
    container: &ContainerSpec,
    pod_dir: &Path,
) -> Result<Vec<HostMount>, InfraError> {
    let err = |what: &Path, e: std::io::Error| InfraError::Launch {
        workload: format!("{}/{}", pod.name, container.name),
        reason: format!("volume {}: {e}", what.display()),
    };
    let mut mounts = Vec::new();
    for m in &container.mounts {
        let Some(volume) = pod.volume(&m.volume) else {
            continue; // a volume type that is not provided: listed as not enforced in the report
        };
        let dir = pod_dir.join(&volume.name);
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        if volume.source == VolumeSource::EmptyDir {
            // As Kubernetes makes it: writable by whatever user the containers run as.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| err(&dir, e))?;
        }
        if let VolumeSource::Files { files, mode } = &volume.source {
            for (rel, content) in files {
                let file = dir.join(rel);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
                }
                std::fs::write(&file, content).map_err(|e| err(&file, e))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| err(&file, e))?;
            }
        }
        let host = match &m.sub_path {
            Some(sub) => dir.join(sub),
            None => dir,
        };
        if !host.exists() {
            std::fs::create_dir_all(&host).map_err(|e| err(&host, e))?;
        }
        mounts.push(HostMount {
            host,
            path: m.path.clone(),
            // Kubernetes mounts configMap and secret volumes read-only whatever the mount says.
            read_only: m.read_only || matches!(volume.source, VolumeSource::Files { .. }),
        });
    }
    Ok(mounts)
}

/// Copies the mounts into a directory tree that stands for the container's root (the vm's guest root).
pub fn copy_into_root(mounts: &[HostMount], root: &Path) -> std::io::Result<()> {
    for m in mounts {
        let target = root.join(m.path.trim_start_matches('/'));
        copy_tree(&m.host, &target)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_and_sub_paths_land_where_the_mounts_say() {
        let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: cfg }
data: { a.json: "{}", b.txt: "bee" }
---
apiVersion: v1
kind: Pod
metadata: { name: p, annotations: { parity.agl.io/can-buses: vehicle } }
spec:
  volumes: [{ name: cfg, configMap: { name: cfg } }, { name: tmp, emptyDir: {} }]
  containers:
    - name: c
      image: agl/x:1
      volumeMounts:
        - { name: cfg, mountPath: /etc/x }
        - { name: cfg, mountPath: /etc/b.txt, subPath: b.txt }
        - { name: tmp, mountPath: /scratch }
"#;
        let pod = &crate::manifest::parse(text, Path::new("t.yaml")).unwrap()[0];
        let dir = tempfile::tempdir().unwrap();
        let mounts = materialise(pod, &pod.containers[0], dir.path()).unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            std::fs::read_to_string(mounts[0].host.join("a.json")).unwrap(),
            "{}"
        );
        assert_eq!(std::fs::read_to_string(&mounts[1].host).unwrap(), "bee");
        assert!(mounts[0].read_only && !mounts[2].read_only);
        let root = dir.path().join("root");
        copy_into_root(&mounts, &root).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("etc/b.txt")).unwrap(), "bee");
        assert!(root.join("scratch").is_dir());
    }
}
