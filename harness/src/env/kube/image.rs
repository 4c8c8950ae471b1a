//! The kube environment's images, in podman's own store (podman does not read Docker's).
//!
//! * **An executable** of the project becomes the same FROM-scratch image as in the container environment
//!   ([`ExecutableImage`]): `agl-parity/<binary>:<content hash>`, made once with `podman import` of a tar
//!   of its files, and tagged with the manifest's own `image` reference, so the manifest finds it unchanged.
//! * **A container image** of the project comes from podman's store, `podman load` of its tarball or
//!   `podman build` of its Containerfile; its Entrypoint and Cmd come from `podman image inspect`.
//! * An image no source provides is usable when podman has it already.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::podman::Podman;
use crate::env::contract::RunContext;
use crate::env::image_content::{executable_argv, kubernetes_argv, local_repository, ExecutableImage};
use crate::error::InfraError;
use crate::manifest::{ContainerSpec, ImageRef};
use crate::project::ImageFrom;
use crate::workload::WorkloadSource;

/// How long an import, load or build may take.
const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A container's image in podman's store, and its full command line (entrypoint and cmd under the
/// manifest's `command`/`args`).
#[derive(Clone, Debug)]
pub(super) struct PodmanImage {
    pub(super) argv: Vec<String>,
}

/// An image's own Entrypoint and Cmd.
type EntryAndCmd = (Vec<String>, Vec<String>);

/// The images prepared in one run: manifest reference -> the image's own Entrypoint and Cmd.
pub(super) struct PodmanImages {
    prepared: tokio::sync::Mutex<HashMap<String, EntryAndCmd>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageInspect {
    #[serde(default)]
    config: ImageConfig,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ImageConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

impl PodmanImages {
    pub(super) fn new() -> PodmanImages {
        PodmanImages {
            prepared: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure podman has the image of `spec` under its manifest reference; returns its command line.
    pub(super) async fn image_for(
        &self,
        podman: &Podman,
        run: &RunContext,
        spec: &ContainerSpec,
    ) -> Result<PodmanImage, InfraError> {
        let image = &spec.image;
        let reference = image.to_string();
        let source = run.catalog.resolve(image).await;
        let mut prepared = self.prepared.lock().await;
        let entry = match prepared.get(&reference) {
            Some(entry) => entry.clone(),
            None => {
                let entry = match &source {
                    Ok(WorkloadSource::Executable(binary)) => {
                        import_executable(podman, run, image, binary).await?
                    }
                    Ok(WorkloadSource::Image { reference: from, how }) => {
                        prepare_user_image(podman, image, from, how).await?
                    }
                    // Not the project's: usable when podman has it.
                    Err(e) => inspect(podman, &reference).await.map_err(|_| e.clone())?,
                };
                prepared.insert(reference.clone(), entry.clone());
                entry
            }
        };
        let argv = match &source {
            Ok(WorkloadSource::Executable(binary)) => executable_argv(spec, binary)?,
            _ => kubernetes_argv(&spec.command, &spec.args, &entry),
        };
        Ok(PodmanImage { argv })
    }
}

/// The image's Entrypoint and Cmd, from podman's store.
async fn inspect(podman: &Podman, reference: &str) -> Result<EntryAndCmd, InfraError> {
    let found: Vec<ImageInspect> = podman
        .json(&["image", "inspect", reference], "image inspect JSON")
        .await
        .map_err(|e| InfraError::Build {
            workload: reference.to_string(),
            reason: format!("not in podman's store: {e}"),
        })?;
    let config = found.into_iter().next().map(|i| i.config).unwrap_or_default();
    Ok((
        config.entrypoint.unwrap_or_default(),
        config.cmd.unwrap_or_default(),
    ))
}

/// Imports the FROM-scratch image of an executable (unless podman has it) and tags it with the manifest's
/// reference.
async fn import_executable(
    podman: &Podman,
    run: &RunContext,
    image: &ImageRef,
    binary: &Path,
) -> Result<EntryAndCmd, InfraError> {
    let build_err = |reason: String| InfraError::Build {
        workload: image.to_string(),
        reason,
    };
    let content = ExecutableImage::of(image, binary).await?;
    let local = format!("{}:{}", local_repository(image), content.hash);
    if podman.run(&["image", "exists", &local]).await.is_err() {
        let started = Instant::now();
        let staging = run.state_dir.join(format!("kube-image-{}", content.hash));
        let root = staging.join("root");
        for (host, at) in &content.files {
            let to = root.join(at.trim_start_matches('/'));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| build_err(format!("{}: {e}", parent.display())))?;
            }
            let real =
                std::fs::canonicalize(host).map_err(|e| build_err(format!("{}: {e}", host.display())))?;
            if std::fs::hard_link(&real, &to).is_err() {
                std::fs::copy(&real, &to).map_err(|e| build_err(format!("{}: {e}", real.display())))?;
            }
        }
        let tarball = staging.join("image.tar");
        let tar = tokio::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| build_err(format!("cannot run `tar`: {e}")))?;
        if !tar.status.success() {
            return Err(build_err(format!(
                "tar of the image's files failed: {}",
                String::from_utf8_lossy(&tar.stderr).trim()
            )));
        }
        let change = format!("ENTRYPOINT [\"{}\"]", content.entry);
        let tarball_arg = tarball.display().to_string();
        let imported = podman
            .run_within(
                &["import", "--quiet", "--change", &change, &tarball_arg, &local],
                BUILD_TIMEOUT,
            )
            .await;
        let _ = std::fs::remove_dir_all(&staging);
        imported.map_err(|e| build_err(format!("podman import of {local}: {e}")))?;
        tracing::info!(image = %local, dynamic = content.dynamic, files = content.files.len(),
            ms = started.elapsed().as_millis() as u64, "imported image into podman");
    }
    let reference = image.to_string();
    podman
        .run(&["tag", &local, &reference])
        .await
        .map_err(|e| build_err(format!("cannot tag {local} as {reference}: {e}")))?;
    Ok((vec![content.entry], Vec::new()))
}

/// A project's container image in podman's store: already there, loaded from its tarball or built from
/// its Containerfile; tagged with the manifest's reference.
async fn prepare_user_image(
    podman: &Podman,
    image: &ImageRef,
    reference: &str,
    how: &ImageFrom,
) -> Result<EntryAndCmd, InfraError> {
    let build_err = |reason: String| InfraError::Build {
        workload: image.to_string(),
        reason,
    };
    let mut source = reference.to_string();
    match how {
        ImageFrom::Engine => {}
        ImageFrom::Tarball(tarball) => {
            let out = podman
                .run_within(
                    &["load", "--input", &tarball.display().to_string()],
                    BUILD_TIMEOUT,
                )
                .await
                .map_err(|e| build_err(format!("podman load of {}: {e}", tarball.display())))?;
            if podman.run(&["image", "exists", reference]).await.is_err() {
                // An untagged tarball is known by its id only.
                if let Some(id) = out.lines().find_map(|l| l.strip_prefix("Loaded image: ")) {
                    source = id.trim().to_string();
                }
            }
        }
        ImageFrom::Containerfile(file) => {
            let context = file.parent().unwrap_or(Path::new("."));
            podman
                .run_within(
                    &[
                        "build",
                        "--tag",
                        reference,
                        "--file",
                        &file.display().to_string(),
                        &context.display().to_string(),
                    ],
                    BUILD_TIMEOUT,
                )
                .await
                .map_err(|e| build_err(format!("podman build of {}: {e}", file.display())))?;
        }
    }
    let entry = inspect(podman, &source).await.map_err(|_| {
        build_err(format!(
            "image `{reference}` is not in podman's store: `podman pull` or `podman load` it, or give the source a `tarball:` or `containerfile:`"
        ))
    })?;
    let manifest_ref = image.to_string();
    if source != manifest_ref {
        podman
            .run(&["tag", &source, &manifest_ref])
            .await
            .map_err(|e| build_err(format!("cannot tag {source} as {manifest_ref}: {e}")))?;
    }
    Ok(entry)
}
