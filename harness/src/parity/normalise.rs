//! Normalisation: what of a scenario's recording the parity engine compares.
//!
//! A bus's tape is cut to the observation window (frames up to the end of the scenario's last step; the
//! teardown that follows stays in the candump trace only), the signals `parity.yaml` declares volatile are
//! masked (raw 0), the ignored CAN ids are left out, and what is left becomes, per CAN id, the sequence of
//! distinct consecutive payloads plus a frame count. The World stores that in each [`crate::record::BusRun`]
//! when it records a scenario; [`crate::parity::compare`] compares it across environments.

use std::collections::BTreeMap;

use crate::bus::TracedFrame;
use crate::config::ParityConfig;
use crate::fixtures::Fixtures;
use crate::record::SIGNAL_POINTS;

/// The frames of a tape that are compared: those recorded up to `end_ns` (the end of the last step).
pub fn observed(frames: &[TracedFrame], end_ns: u64) -> Vec<TracedFrame> {
    frames
        .iter()
        .filter(|f| f.timestamp_ns <= end_ns)
        .cloned()
        .collect()
}

/// The comparable form of a frame: key (CAN id) and value (the rest of its candump text).
pub fn frame_key_value(frame: &vcan::Frame) -> (String, String) {
    let text = frame.to_string();
    match frame.id() {
        Some(id) => {
            let key = id.to_string();
            let value = text.strip_prefix(&key).unwrap_or(&text).to_string();
            (key, value)
        }
        None => ("error".into(), text),
    }
}

/// Per-id sequences and counts of a tape, with volatile signals masked and ignored ids left out.
pub fn sequences(
    frames: &[TracedFrame],
    fixtures: &Fixtures,
    config: &ParityConfig,
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, u64>) {
    let mut seqs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for f in frames {
        let frame = mask(&f.frame, fixtures, config);
        let (key, value) = frame_key_value(&frame);
        if config
            .ignore_ids
            .iter()
            .any(|i| i.trim_start_matches("0x").eq_ignore_ascii_case(&key))
        {
            continue;
        }
        *counts.entry(key.clone()).or_default() += 1;
        let seq = seqs.entry(key).or_default();
        if seq.last() != Some(&value) {
            seq.push(value);
        }
    }
    (seqs, counts)
}

/// Per signal (`Message.Signal`): (ms, value) points, as [`crate::record::BusRun::signals`].
pub type SignalSeries = BTreeMap<String, Vec<(f64, f64)>>;

/// Per DBC signal (`Message.Signal`) of the frames: (ms since `start_ns`, physical value) at every change,
/// plus the last value at the end, for value-over-time plots. A signal that changes more often than
/// [`SIGNAL_POINTS`] times is thinned evenly (first and last point kept). Also: each decoded message's
/// CAN id.
pub fn signal_series(
    frames: &[TracedFrame],
    fixtures: &Fixtures,
    start_ns: u64,
) -> (SignalSeries, BTreeMap<String, String>) {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut last: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for f in frames {
        let Some(message) = fixtures.message_for(&f.frame) else {
            continue;
        };
        let Ok(values) = message.decode(&f.frame) else {
            continue;
        };
        let t = (f.timestamp_ns as f64 - start_ns as f64) / 1e6;
        if !ids.contains_key(&message.name) {
            ids.insert(message.name.clone(), frame_key_value(&f.frame).0);
        }
        for (signal, value) in values {
            if !value.is_finite() {
                continue;
            }
            let key = format!("{}.{signal}", message.name);
            let series = out.entry(key.clone()).or_default();
            if series.last().is_none_or(|(_, v)| *v != value) {
                series.push((t, value));
            }
            last.insert(key, (t, value));
        }
    }
    for (key, series) in &mut out {
        if let Some(end) = last.get(key) {
            if series.last() != Some(end) {
                series.push(*end);
            }
        }
        if series.len() > SIGNAL_POINTS {
            let n = series.len();
            let keep: Vec<(f64, f64)> = (0..SIGNAL_POINTS)
                .map(|i| series[i * (n - 1) / (SIGNAL_POINTS - 1)])
                .collect();
            *series = keep;
        }
    }
    (out, ids)
}

fn mask(frame: &vcan::Frame, fixtures: &Fixtures, config: &ParityConfig) -> vcan::Frame {
    let Some(message) = fixtures.message_for(frame) else {
        return frame.clone();
    };
    let mut masked: Vec<&vcan::dbc::SignalDef> = Vec::new();
    for name in config.masked_signals(&message.name) {
        if let Ok(signal) = message.signal(name) {
            masked.push(signal);
        }
    }
    if masked.is_empty() {
        return frame.clone();
    }
    let mut data = frame.payload().to_vec();
    for signal in masked {
        signal.encode(signal.offset, &mut data); // raw 0
    }
    match frame {
        vcan::Frame::Data { id, .. } => vcan::Frame::data(*id, &data).unwrap_or_else(|_| frame.clone()),
        vcan::Frame::Fd { id, flags, .. } => {
            vcan::Frame::fd(*id, &data, *flags).unwrap_or_else(|_| frame.clone())
        }
        _ => frame.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_series_keep_change_points_and_are_bounded() {
        let dbc = "VERSION \"\"\n\nBU_: ECU\n\nBO_ 928 HvacStatus: 2 ECU\n SG_ FanLevel : 0|8@1+ (1,0) [0|7] \"\" Vector__XXX\n SG_ AliveCounter : 8|8@1+ (1,0) [0|255] \"\" Vector__XXX\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.dbc"), dbc).unwrap();
        let fixtures = Fixtures::from_paths(&[], &[dir.path().join("x.dbc")]);
        let frames: Vec<TracedFrame> = (0..2000u64)
            .map(|i| TracedFrame {
                timestamp_ns: 1_000_000 * (i + 1),
                seq: None,
                frame: format!("3A0#{:02X}{:02X}", u8::from(i >= 1000) * 3, i % 256)
                    .parse()
                    .unwrap(),
            })
            .collect();
        let (series, ids) = signal_series(&frames, &fixtures, 0);
        assert_eq!(ids["HvacStatus"], "3A0");
        // FanLevel changed once: its first value, the change and the last value at the end.
        assert_eq!(
            series["HvacStatus.FanLevel"],
            vec![(1.0, 0.0), (1001.0, 3.0), (2000.0, 3.0)]
        );
        let alive = &series["HvacStatus.AliveCounter"];
        assert_eq!(alive.len(), SIGNAL_POINTS);
        assert_eq!(alive[0], (1.0, 0.0));
        assert_eq!(alive[SIGNAL_POINTS - 1], (2000.0, 207.0));
    }

    #[test]
    fn sequences_collapse_repeats_per_id() {
        let f = |ts: u64, text: &str| TracedFrame {
            timestamp_ns: ts,
            seq: None,
            frame: text.parse().unwrap(),
        };
        let frames = vec![
            f(1, "3A0#01"),
            f(2, "300#00"),
            f(3, "3A0#01"),
            f(4, "3A0#02"),
            f(5, "3A0#01"),
        ];
        let (seqs, counts) = sequences(&frames, &Fixtures::default(), &ParityConfig::default());
        assert_eq!(seqs["3A0"], vec!["#01", "#02", "#01"]);
        assert_eq!(seqs["300"], vec!["#00"]);
        assert_eq!(counts["3A0"], 4);
        let config = ParityConfig {
            ignore_ids: vec!["0x300".into()],
            ..ParityConfig::default()
        };
        let (seqs, _) = sequences(&frames, &Fixtures::default(), &config);
        assert!(!seqs.contains_key("300"));
    }
}
