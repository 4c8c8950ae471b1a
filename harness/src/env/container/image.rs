//! The images of the container environment: FROM-scratch images built locally from a workload's static
//! binary (`agl-parity/<binary>:<content hash>`, rebuilt only when the binary changes), tagged with the
//! manifest's own `image` reference, and the command line each runs under `pod-init`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use bollard::query_parameters::TagImageOptions;
use bollard::Docker;
use testcontainers::runners::AsyncBuilder;
use testcontainers::GenericBuildableImage;

use crate::env::contract::RunContext;
use crate::env::launcher::argv_for;
use crate::error::InfraError;
use crate::manifest::ContainerSpec;

/// A local image and the command line it runs under `pod-init`.
#[derive(Clone)]
pub(super) struct LocalImage {
    pub(super) reference: String,
    /// Entrypoint plus arguments, as `pod-init` executes them.
    pub(super) argv: Vec<String>,
}

/// The images built during one run: manifest reference -> local image reference.
pub(super) struct Images {
    built: tokio::sync::Mutex<HashMap<String, String>>,
}

impl Images {
    pub(super) fn new() -> Images {
        Images {
            built: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The local image of a container and its command line: our images are built from the workload binary
    /// (content-hash tag); an image that is not ours is usable when the engine already has it.
    pub(super) async fn image_for(
        &self,
        docker: &Docker,
        run: &RunContext,
        spec: &ContainerSpec,
    ) -> Result<LocalImage, InfraError> {
        let image = &spec.image;
        let binary = match run.catalog.binary_for(image).await {
            Ok(b) => b,
            Err(e) => {
                let Ok(inspect) = docker.inspect_image(&image.to_string()).await else {
                    return Err(e);
                };
                let config = inspect.config.unwrap_or_default();
                let mut argv = if spec.command.is_empty() {
                    config.entrypoint.unwrap_or_default()
                } else {
                    spec.command.clone()
                };
                argv.extend(if spec.args.is_empty() {
                    config.cmd.unwrap_or_default()
                } else {
                    spec.args.clone()
                });
                return Ok(LocalImage {
                    reference: image.to_string(),
                    argv,
                });
            }
        };
        let entry = format!("/{}", image.binary_name());
        let mut argv = vec![entry.clone()];
        argv.extend(argv_for(spec, &binary)?.into_iter().skip(1));
        let mut images = self.built.lock().await;
        if let Some(reference) = images.get(&image.to_string()) {
            return Ok(LocalImage {
                reference: reference.clone(),
                argv,
            });
        }
        let build_err = |reason: String| InfraError::Build {
            workload: image.to_string(),
            reason,
        };
        let hash = content_hash(&binary).map_err(|e| build_err(format!("{}: {e}", binary.display())))?;
        let name = format!("agl-parity/{}", image.binary_name());
        let local = format!("{name}:{hash}");
        if docker.inspect_image(&local).await.is_err() {
            let started = Instant::now();
            let dockerfile = format!(
                "FROM scratch\nCOPY workload {entry}\nLABEL org.opencontainers.image.title=\"{}\"\nENTRYPOINT [\"{entry}\"]\n",
                image.binary_name()
            );
            let _built = GenericBuildableImage::new(name.clone(), hash.clone())
                .with_dockerfile_string(dockerfile)
                .with_file(binary.clone(), "workload")
                .build_image()
                .await
                .map_err(|e| build_err(format!("docker build of {local} failed: {e}")))?;
            tracing::info!(image = %local, ms = started.elapsed().as_millis() as u64, "built image");
        }
        let tag = TagImageOptions {
            repo: Some(image.repository.clone()),
            tag: Some(image.tag.clone()),
        };
        docker
            .tag_image(&local, Some(tag))
            .await
            .map_err(|e| build_err(format!("cannot tag {local} as {image}: {e}")))?;
        images.insert(image.to_string(), local.clone());
        Ok(LocalImage {
            reference: local,
            argv,
        })
    }
}

/// FNV-1a over the file: a stable content hash for image tags.
fn content_hash(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_stable_and_content_based() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"static binary").unwrap();
        let h1 = content_hash(&a).unwrap();
        assert_eq!(h1, content_hash(&a).unwrap());
        assert_eq!(h1.len(), 16);
        std::fs::write(&a, b"static binary!").unwrap();
        assert_ne!(h1, content_hash(&a).unwrap());
    }
}
