//! Captured output of one container across all its incarnations.
//!
//! A [`LogSink`] appends every line a workload prints (and the harness's own notes about it, prefixed with
//! `# harness:`) to a file in the report directory and keeps them in memory, so steps can wait for a log
//! line and infra errors can quote the last lines.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

struct Inner {
    lines: Vec<String>,
    file: Option<File>,
}

/// Shared, cloneable log of one container.
#[derive(Clone)]
pub struct LogSink {
    name: Arc<str>,
    path: Option<PathBuf>,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl LogSink {
    /// A log written to `path` (created, truncated) and kept in memory.
    pub fn create(name: &str, path: &Path) -> std::io::Result<LogSink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        Ok(LogSink {
            name: name.into(),
            path: Some(path.to_path_buf()),
            inner: Arc::new(Mutex::new(Inner {
                lines: Vec::new(),
                file: Some(file),
            })),
            changed: Arc::new(Notify::new()),
        })
    }

    /// A log kept in memory only.
    pub fn memory(name: &str) -> LogSink {
        LogSink {
            name: name.into(),
            path: None,
            inner: Arc::new(Mutex::new(Inner {
                lines: Vec::new(),
                file: None,
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one line of workload output.
    pub fn push(&self, line: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(file) = inner.file.as_mut() {
                let _ = writeln!(file, "{line}");
            }
            inner.lines.push(line.to_string());
        }
        self.changed.notify_waiters();
    }

    /// Appends a note from the harness (process exits, restarts, stops).
    pub fn note(&self, text: &str) {
        self.push(&format!("# harness: {text}"));
    }

    /// Number of lines so far.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.lines.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the first line at or after `from` that contains `needle`.
    pub fn find(&self, from: usize, needle: &str) -> Option<usize> {
        let inner = self.inner.lock().ok()?;
        inner
            .lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| i)
    }

    /// The last `n` lines, joined, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let Ok(inner) = self.inner.lock() else {
            return String::new();
        };
        let start = inner.lines.len().saturating_sub(n);
        inner.lines[start..]
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a line containing `needle` appears at or after index `from`, up to `timeout`.
    pub async fn wait_for(&self, from: usize, needle: &str, timeout: std::time::Duration) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(i) = self.find(from, needle) {
                return Some(i);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.find(from, needle);
            }
        }
    }

    /// Copies lines from a process pipe into the log until EOF (run as a task). Await the returned handle
    /// (see [`drain`]) after the process exits, so its last lines are in the log before the exit is noted.
    pub fn follow<R: AsyncRead + Unpin + Send + 'static>(&self, reader: R) -> JoinHandle<()> {
        let sink = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.push(&line);
            }
        })
    }
}

/// How long [`drain`] waits for pipe readers after their process exited. A pipe stays open past that only
/// when a descendant of the process still holds it.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Waits (up to [`DRAIN_LIMIT`] in all) until every reader of an exited process's pipes reached EOF.
pub async fn drain(readers: &mut [Option<JoinHandle<()>>]) {
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    for slot in readers.iter_mut() {
        if let Some(handle) = slot.as_mut() {
            if tokio::time::timeout_at(deadline, &mut *handle).await.is_err() {
                handle.abort();
            }
        }
        *slot = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_found_and_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/w.log");
        let log = LogSink::create("w", &path).unwrap();
        log.push("{\"event\":\"ready\"}");
        log.note("exited: exit code 0");
        assert_eq!(log.find(0, "ready"), Some(0));
        assert_eq!(log.find(1, "ready"), None);
        assert_eq!(
            log.wait_for(0, "exited", Duration::from_millis(10)).await,
            Some(1)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"event\":\"ready\"}\n# harness: exited: exit code 0\n");
        assert!(log.tail(1).contains("exited"));
    }

    #[tokio::test]
    async fn wait_for_sees_later_lines() {
        let log = LogSink::memory("w");
        let writer = log.clone();
        let waiter = tokio::spawn(async move { log.wait_for(0, "late", Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        writer.push("early");
        writer.push("late line");
        assert_eq!(waiter.await.unwrap(), Some(1));
    }
}
