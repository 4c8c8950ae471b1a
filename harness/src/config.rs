//! The parity configuration of a project ([`PARITY_CONFIG`], `scenarios/parity.yaml`): what counts as the
//! same behaviour.
//!
//! ```yaml
//! default_bus: vehicle            # bus that steps use when they name none
//! mask_signals:                   # signals that legitimately differ between runs (alive counters, clocks)
//!   - HvacStatus.AliveCounter
//! ignore_ids: []                  # CAN ids left out of frame-sequence comparison entirely (hex: 3A0, 18FF0010)
//! timing_tolerance: 0.25          # relative shift of a measured period, beyond the environments' own noise, that is a drift
//! buses:                          # optional: buses with a bitrate behave like physical ones (no entry: ideal)
//!   vehicle:
//!     bitrate: 500000             # nominal bit/s
//!     data_bitrate: 2000000       # CAN FD data phase (frames with BRS); default: the nominal bitrate
//!     stuffing: worst-case        # worst-case | exact | none
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fixtures::Fixtures;

/// The slowest and fastest bitrates a bus may be given (bit/s).
pub const MIN_BITRATE: u32 = 1_000;
pub const MAX_BITRATE: u32 = 15_000_000;

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
    /// Buses with a bitrate: frames take their time on the wire, arbitrated by id.
    #[serde(default)]
    pub buses: std::collections::BTreeMap<String, BusTimingConfig>,
}

/// The bitrate of one bus (`buses.<name>` in `parity.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusTimingConfig {
    pub bitrate: u32,
    #[serde(default)]
    pub data_bitrate: Option<u32>,
    #[serde(default)]
    pub stuffing: StuffingConfig,
}

/// How stuff bits are counted on a bus with a bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StuffingConfig {
    /// The most any payload needs (what a bus must be planned for).
    #[default]
    WorstCase,
    /// Each classic frame's own stuff bits, from its bits and CRC.
    Exact,
    /// No stuff bits (the shortest frames).
    None,
}

impl BusTimingConfig {
    /// The hub's bus timing.
    pub fn timing(&self) -> vcan::bustime::BusTiming {
        vcan::bustime::BusTiming {
            bitrate: vcan::bittiming::Bitrate {
                nominal: self.bitrate,
                data: self.data_bitrate,
            },
            stuffing: match self.stuffing {
                StuffingConfig::WorstCase => vcan::bittiming::Stuffing::WorstCase,
                StuffingConfig::Exact => vcan::bittiming::Stuffing::Exact,
                StuffingConfig::None => vcan::bittiming::Stuffing::None,
            },
        }
    }
}

/// An `ignore_ids` entry: a hex CAN id as candump writes it (`3A0`, `0x3A0`: up to three digits, a
/// standard id; more: an extended id).
fn parse_ignored_id(text: &str) -> Result<vcan::CanId, String> {
    let digits = text.trim();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .unwrap_or(digits);
    let bad = || format!("`{text}` is not a hex CAN id (e.g. 0x3A0, 18FF0010)");
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let id = u32::from_str_radix(digits, 16).map_err(|_| bad())?;
    let id = if digits.len() <= 3 {
        vcan::CanId::standard(id)
    } else {
        vcan::CanId::extended(id)
    };
    id.map_err(|e| format!("`{text}`: {e}"))
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
            buses: Default::default(),
        }
    }
}

impl ParityConfig {
    /// The parity configuration file of the project at `project_dir` ([`PARITY_CONFIG`]).
    pub fn path_in(project_dir: &Path) -> PathBuf {
        project_dir.join(PARITY_CONFIG)
    }

    /// Reads the file if it exists; defaults otherwise. Errors name the file and the field.
    pub fn load(path: &Path) -> Result<ParityConfig, ConfigError> {
        if !path.exists() {
            return Ok(ParityConfig::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let mut config: ParityConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Field {
                path: path.to_path_buf(),
                field: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
        // Written as the recordings name ids (`3A0`, `18FF0010`), so that `0x20` matches `020`.
        for (i, entry) in config.ignore_ids.iter_mut().enumerate() {
            let id = parse_ignored_id(entry).map_err(|reason| ConfigError::Field {
                path: path.to_path_buf(),
                field: format!("ignore_ids[{i}]"),
                reason,
            })?;
            *entry = id.to_string();
        }
        for m in &config.mask_signals {
            if m.split_once('.')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
            {
                return Err(ConfigError::Mask {
                    path: path.to_path_buf(),
                    mask: m.clone(),
                });
            }
        }
        for (bus, timing) in &config.buses {
            for (field, rate) in [
                ("bitrate", Some(timing.bitrate)),
                ("data_bitrate", timing.data_bitrate),
            ] {
                if let Some(rate) = rate.filter(|r| !(MIN_BITRATE..=MAX_BITRATE).contains(r)) {
                    return Err(ConfigError::Field {
                        path: path.to_path_buf(),
                        field: format!("buses.{bus}.{field}"),
                        reason: format!(
                            "{rate} bit/s is outside {MIN_BITRATE}..={MAX_BITRATE} (CAN runs at 10 kbit/s to 1 Mbit/s, FD data phases up to 15 Mbit/s)"
                        ),
                    });
                }
            }
        }
        if !(0.0..10.0).contains(&config.timing_tolerance) {
            return Err(ConfigError::Tolerance {
                path: path.to_path_buf(),
            });
        }
        Ok(config)
    }

    /// Checks the settings against the project's manifests and DBC (`path` names `parity.yaml` in what
    /// it says). A `mask_signals` entry naming no signal of the DBC databases is an error; when some DBC
    /// file could not be read it may be in that one, so it is a warning instead. A `default_bus` that no
    /// manifest's workload joins is a warning: steps that name no bus use it, and there they reach no
    /// workload. Returns the warnings.
    pub fn check_against(&self, path: &Path, fixtures: &Fixtures) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        for (i, mask) in self.mask_signals.iter().enumerate() {
            let Some((message, signal)) = mask.split_once('.') else {
                continue; // `load` refuses these
            };
            let missing = match fixtures.message(message) {
                Err(_) => format!("no DBC message `{message}`"),
                Ok(m) if m.signal(signal).is_err() => format!(
                    "message `{message}` has no signal `{signal}` (signals: {})",
                    m.signals
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Ok(_) => continue,
            };
            let searched = fixtures
                .dbc_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if fixtures.dbc_errors.is_empty() {
                return Err(ConfigError::UnknownSignal {
                    path: path.to_path_buf(),
                    index: i,
                    mask: mask.clone(),
                    reason: format!("{missing} in {searched}"),
                });
            }
            warnings.push(format!(
                "{}: mask_signals[{i}]: `{mask}`: {missing} in the DBC files that could be read ({})",
                path.display(),
                fixtures.dbc_errors.join("; ")
            ));
        }
        let mut joined: Vec<&str> = fixtures
            .workloads
            .values()
            .flat_map(|w| w.buses.iter().map(String::as_str))
            .collect();
        joined.sort_unstable();
        joined.dedup();
        if !joined.is_empty() && !joined.contains(&self.default_bus.as_str()) {
            warnings.push(format!(
                "{}: default_bus: no manifest's workload joins bus `{}` (they join: {}); steps that name no bus use it and reach no workload there",
                path.display(),
                self.default_bus,
                joined.join(", ")
            ));
        }
        Ok(warnings)
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

/// Why `parity.yaml` cannot be used; every variant names the file, and the field where there is one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: {field}: {reason}", .path.display())]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{}: mask_signals: `{mask}` is not `Message.Signal`", .path.display())]
    Mask { path: PathBuf, mask: String },
    #[error("{}: mask_signals[{index}]: `{mask}` names no DBC signal: {reason}", .path.display())]
    UnknownSignal {
        path: PathBuf,
        index: usize,
        mask: String,
        reason: String,
    },
    #[error("{}: timing_tolerance: must be between 0 and 10", .path.display())]
    Tolerance { path: PathBuf },
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
        let e = ParityConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("unknown field `mask_signalz`"), "{e}");
        std::fs::write(&p, "mask_signals: [Nope]\n").unwrap();
        assert!(ParityConfig::load(&p).unwrap_err().to_string().contains("`Nope`"));
        std::fs::write(
            &p,
            "buses:\n  vehicle:\n    bitrate: 500000\n    stuffing: exact\n",
        )
        .unwrap();
        let c = ParityConfig::load(&p).unwrap();
        assert_eq!(c.buses["vehicle"].timing().bitrate.nominal, 500_000);
        std::fs::write(&p, "buses:\n  vehicle:\n    bitrate: 50\n").unwrap();
        let e = ParityConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("buses.vehicle.bitrate") && e.contains("50 bit/s"),
            "{e}"
        );
        std::fs::write(
            &p,
            "buses:\n  vehicle:\n    bitrate: 500000\n    stufing: exact\n",
        )
        .unwrap();
        let e = ParityConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("buses.vehicle") && e.contains("stufing"), "{e}");
    }
}
