//! The parity configuration of a project ([`PARITY_CONFIG`], `scenarios/parity.yaml`): what counts as the
//! same behaviour.
//!
//! ```yaml
//! default_bus: vehicle            # bus that steps use when they name none
//! mask_signals:                   # signals that legitimately differ between runs (alive counters, clocks)
//!   - HvacStatus.AliveCounter
//! ignore_ids: []                  # CAN ids left out of frame-sequence comparison entirely
//! timing_tolerance: 0.25          # relative difference of a measured period beyond which environments drift
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a project keeps its parity configuration, relative to the project directory.
pub const PARITY_CONFIG: &str = "scenarios/parity.yaml";

/// Parity settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParityConfig {
    #[serde(default = "default_bus")]
    pub default_bus: String,
    #[serde(default)]
    pub mask_signals: Vec<String>,
    #[serde(default)]
    pub ignore_ids: Vec<String>,
    #[serde(default = "default_tolerance")]
    pub timing_tolerance: f64,
}

fn default_bus() -> String {
    "vehicle".into()
}

fn default_tolerance() -> f64 {
    0.25
}

impl Default for ParityConfig {
    fn default() -> Self {
        ParityConfig {
            default_bus: default_bus(),
            mask_signals: Vec::new(),
            ignore_ids: Vec::new(),
            timing_tolerance: default_tolerance(),
        }
    }
}

impl ParityConfig {
    /// The parity configuration file of the project at `project_dir` ([`PARITY_CONFIG`]).
    pub fn path_in(project_dir: &Path) -> PathBuf {
        project_dir.join(PARITY_CONFIG)
    }

    /// Reads the file if it exists; defaults otherwise. Errors name the file and the field.
    pub fn load(path: &Path) -> Result<ParityConfig, String> {
        if !path.exists() {
            return Ok(ParityConfig::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let config: ParityConfig = serde_path_to_error::deserialize(de)
            .map_err(|e| format!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
        for m in &config.mask_signals {
            if m.split_once('.')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
            {
                return Err(format!(
                    "{}: mask_signals: `{m}` is not `Message.Signal`",
                    path.display()
                ));
            }
        }
        if !(0.0..10.0).contains(&config.timing_tolerance) {
            return Err(format!(
                "{}: timing_tolerance: must be between 0 and 10",
                path.display()
            ));
        }
        Ok(config)
    }

    /// Masked signals of message `message`.
    pub fn masked_signals<'a>(&'a self, message: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.mask_signals.iter().filter_map(move |m| {
            m.split_once('.')
                .filter(|(msg, _)| *msg == message)
                .map(|(_, s)| s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("parity.yaml");
        assert_eq!(ParityConfig::load(&p).unwrap().default_bus, "vehicle");
        std::fs::write(&p, "mask_signals: [HvacStatus.AliveCounter]\n").unwrap();
        let c = ParityConfig::load(&p).unwrap();
        assert_eq!(
            c.masked_signals("HvacStatus").collect::<Vec<_>>(),
            vec!["AliveCounter"]
        );
        std::fs::write(&p, "mask_signalz: []\n").unwrap();
        let e = ParityConfig::load(&p).unwrap_err();
        assert!(e.contains("unknown field `mask_signalz`"), "{e}");
        std::fs::write(&p, "mask_signals: [Nope]\n").unwrap();
        assert!(ParityConfig::load(&p).unwrap_err().contains("`Nope`"));
    }
}
