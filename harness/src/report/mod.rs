//! Reports of a run, written to `reports/<run-id>/`:
//!
//! * `junit.xml`: one testcase per scenario × environment (environment as a property), plus a `parity`
//!   suite with one testcase per scenario verdict;
//! * `parity.json`: the whole [`RunReport`], including every record; what `parity merge` reads back;
//! * `summary.md` and `summary.html`: the scenario × environment matrix, drifts, failures, timing tables and
//!   plots (the HTML is self-contained, with inline SVG);
//! * `traces/<env>/*.log` (candump) and `logs/<env>/…` are written during the run.
//!
//! [`terminal`] renders the matrix for the end of a run on the terminal.

mod common;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod terminal;

use std::path::{Path, PathBuf};

use crate::parity::RunReport;

pub use common::env_columns;

/// Files written for a run.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub junit: PathBuf,
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
}

/// Writes every report file into `dir`.
pub fn write_all(report: &RunReport, dir: &Path) -> std::io::Result<ReportFiles> {
    std::fs::create_dir_all(dir)?;
    let files = ReportFiles {
        junit: dir.join("junit.xml"),
        json: dir.join("parity.json"),
        markdown: dir.join("summary.md"),
        html: dir.join("summary.html"),
    };
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&files.json, json)?;
    std::fs::write(
        &files.junit,
        junit::render(report).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(&files.markdown, markdown::render(report))?;
    std::fs::write(&files.html, html::render(report))?;
    Ok(files)
}

/// Reads a `parity.json` back.
pub fn read_json(path: &Path) -> Result<RunReport, ReadReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReadReportError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ReadReportError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })
}

/// Why a `parity.json` cannot be read back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadReportError {
    #[error("{}: {reason}", .path.display())]
    Read {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{}: line {line} column {column}: {reason}", .path.display())]
    Json {
        path: std::path::PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
}
