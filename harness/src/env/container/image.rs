//! The images of the container environment, and the command line each runs under `pod-init`.
//!
//! * **An executable** of the project ([`WorkloadSource::Executable`]) becomes a FROM-scratch image
//!   `agl-parity/<binary>:<content hash>` (rebuilt only when the content changes), tagged with the
//!   manifest's own `image` reference. A static executable is the image's only file; a dynamically linked
//!   one (an ELF with a `PT_INTERP` program header) brings its interpreter and the libraries `ldd` lists, at
//!   their host paths, so it runs unchanged ([`crate::env::libraries`], shared with the vm's guest root).
//! * **A container image** of the project ([`WorkloadSource::Image`]) is used itself: taken from the
//!   engine, loaded with `docker load` or built with `docker build`, once per run, and tagged
//!   `agl-parity/<binary>:id-<image id>` (by content, so runs leave no tags of their own); it runs its own
//!   Entrypoint and Cmd (from `docker inspect`) unless the manifest's `command`/`args` override them, the
//!   Kubernetes way.
//! * An image no source provides is still usable when the engine already has it.
//!
//! `pod-init` stays PID 1 in every case: the launcher bind-mounts it and makes it the entrypoint.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use bollard::query_parameters::TagImageOptions;
use bollard::Docker;
use testcontainers::runners::AsyncBuilder;
use testcontainers::GenericBuildableImage;

use crate::env::contract::RunContext;
use crate::env::image_content::{executable_argv, kubernetes_argv, local_repository, ExecutableImage};
use crate::error::InfraError;
use crate::manifest::{ContainerSpec, ImageRef};
use crate::project::ImageFrom;
use crate::workload::WorkloadSource;

/// A local image and the command line it runs under `pod-init`.
#[derive(Clone)]
pub(super) struct LocalImage {
    pub(super) reference: String,
    /// Entrypoint plus arguments, as `pod-init` executes them.
    pub(super) argv: Vec<String>,
}

/// The images prepared during one run: manifest reference -> local image reference, and the image's own
/// Entrypoint and Cmd for user images.
pub(super) struct Images {
    built: tokio::sync::Mutex<HashMap<String, Prepared>>,
}

#[derive(Clone)]
struct Prepared {
    reference: String,
    /// Entrypoint and Cmd of a user image; `None` for our images of an executable.
    config: Option<(Vec<String>, Vec<String>)>,
}

impl Images {
    pub(super) fn new() -> Images {
        Images {
            built: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The local image of a container and its command line.
    pub(super) async fn image_for(
        &self,
        docker: &Docker,
        run: &RunContext,
        spec: &ContainerSpec,
    ) -> Result<LocalImage, InfraError> {
        let image = &spec.image;
        let source = match run.catalog.resolve(image).await {
            Ok(source) => source,
            Err(e) => {
                // Not the project's: usable when the engine already has it.
                let Ok(inspect) = docker.inspect_image(&image.to_string()).await else {
                    return Err(e);
                };
                let config = inspect.config.unwrap_or_default();
                let entry = (
                    config.entrypoint.unwrap_or_default(),
                    config.cmd.unwrap_or_default(),
                );
                return Ok(LocalImage {
                    reference: image.to_string(),
                    argv: kubernetes_argv(&spec.command, &spec.args, &entry),
                });
            }
        };
        let mut images = self.built.lock().await;
        let prepared = match images.get(&image.to_string()) {
            Some(p) => p.clone(),
            None => {
                let p = match &source {
                    WorkloadSource::Executable(binary) => Prepared {
                        reference: build_from_executable(docker, image, binary).await?,
                        config: None,
                    },
                    WorkloadSource::Image { reference, how } => {
                        prepare_user_image(docker, image, reference, how).await?
                    }
                };
                images.insert(image.to_string(), p.clone());
                p
            }
        };
        let argv = match (&source, &prepared.config) {
            (WorkloadSource::Executable(binary), _) => executable_argv(spec, binary)?,
            (_, Some(entry)) => kubernetes_argv(&spec.command, &spec.args, entry),
            (_, None) => Vec::new(),
        };
        Ok(LocalImage {
            reference: prepared.reference,
            argv,
        })
    }
}

/// Builds (unless it exists) the FROM-scratch image of an executable and tags it with the manifest's
/// reference; returns the local reference.
async fn build_from_executable(
    docker: &Docker,
    image: &ImageRef,
    binary: &Path,
) -> Result<String, InfraError> {
    let build_err = |reason: String| InfraError::Build {
        workload: image.to_string(),
        reason,
    };
    let ExecutableImage {
        files,
        hash,
        entry,
        dynamic,
    } = ExecutableImage::of(image, binary).await?;
    let name = local_repository(image);
    let local = format!("{name}:{hash}");
    if docker.inspect_image(&local).await.is_err() {
        let started = Instant::now();
        let dockerfile = format!(
            "FROM scratch\nCOPY rootfs/ /\nLABEL org.opencontainers.image.title=\"{}\"\nENTRYPOINT [\"{entry}\"]\n",
            image.binary_name()
        );
        let mut build =
            GenericBuildableImage::new(name.clone(), hash.clone()).with_dockerfile_string(dockerfile);
        for (host, at) in &files {
            build = build.with_file(host.clone(), format!("rootfs{at}"));
        }
        let _built = build
            .build_image()
            .await
            .map_err(|e| build_err(format!("docker build of {local} failed: {e}")))?;
        tracing::info!(image = %local, dynamic, files = files.len(),
            ms = started.elapsed().as_millis() as u64, "built image");
    }
    tag(docker, &local, &image.repository, &image.tag)
        .await
        .map_err(|e| build_err(format!("cannot tag {local} as {image}: {e}")))?;
    Ok(local)
}

/// Takes a user image from the engine, loads or builds it, tags it by its id and reads its
/// Entrypoint and Cmd.
async fn prepare_user_image(
    docker: &Docker,
    image: &ImageRef,
    reference: &str,
    how: &ImageFrom,
) -> Result<Prepared, InfraError> {
    let build_err = |reason: String| InfraError::Build {
        workload: image.to_string(),
        reason,
    };
    let started = Instant::now();
    let mut source = reference.to_string();
    match how {
        ImageFrom::Engine => {}
        ImageFrom::Tarball(tarball) => {
            let out = docker_cli(&["load", "--input", &tarball.display().to_string()])
                .await
                .map_err(|e| build_err(format!("docker load of {}: {e}", tarball.display())))?;
            // An untagged tarball is known by its id only.
            if docker.inspect_image(reference).await.is_err() {
                if let Some(id) = out.lines().find_map(|l| l.strip_prefix("Loaded image ID: ")) {
                    source = id.trim().to_string();
                }
            }
        }
        ImageFrom::Containerfile(file) => {
            let context = file.parent().unwrap_or(Path::new("."));
            docker_cli(&[
                "build",
                "--tag",
                reference,
                "--file",
                &file.display().to_string(),
                &context.display().to_string(),
            ])
            .await
            .map_err(|e| build_err(format!("docker build of {}: {e}", file.display())))?;
        }
    }
    let inspect = docker.inspect_image(&source).await.map_err(|e| {
        build_err(format!(
            "image `{reference}` is not in the local Docker engine ({e}): `docker pull` it, or give the source a `tarball:` or `containerfile:`"
        ))
    })?;
    // Tagged by content (the image id), like the images built here: the same tag in every run, so runs
    // leave no tags of their own behind.
    let repo = local_repository(image);
    let id = inspect.id.clone().unwrap_or_default();
    let digits = id.strip_prefix("sha256:").unwrap_or(&id);
    let run_tag = format!("id-{}", digits.get(..12).unwrap_or(digits));
    tag(docker, &source, &repo, &run_tag)
        .await
        .map_err(|e| build_err(format!("cannot tag {source} as {repo}:{run_tag}: {e}")))?;
    tracing::info!(image = %reference, ms = started.elapsed().as_millis() as u64, "prepared user image");
    let config = inspect.config.unwrap_or_default();
    Ok(Prepared {
        reference: format!("{repo}:{run_tag}"),
        config: Some((
            config.entrypoint.unwrap_or_default(),
            config.cmd.unwrap_or_default(),
        )),
    })
}

async fn tag(docker: &Docker, source: &str, repo: &str, tag: &str) -> Result<(), bollard::errors::Error> {
    let options = TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    docker.tag_image(source, Some(options)).await
}

/// Why a docker command did not give what was needed.
#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error("cannot run `{tool}`: {reason}")]
    Spawn { tool: String, reason: String },
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

/// Runs the docker CLI (for `load` and `build`); returns its stdout, or an error with the end of its output.
async fn docker_cli(args: &[&str]) -> Result<String, ToolError> {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ToolError::Spawn {
            tool: "docker".into(),
            reason: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if output.status.success() {
        return Ok(stdout);
    }
    let text = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    Err(ToolError::Failed {
        command: format!("docker {}", args.join(" ")),
        status: output.status.to_string(),
        output: lines[lines.len().saturating_sub(30)..].join("\n"),
    })
}
