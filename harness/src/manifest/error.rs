//! [`ManifestError`]: why a manifest cannot be used, naming the file, the document and the field.

use std::path::PathBuf;

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
    #[error("{path}: no Kubernetes object in the file")]
    Empty { path: PathBuf },
}
