//! `run --format lava` under a real LAVA dispatcher: `lava-run` (lava-dispatcher, Debian 12's 2023.01)
//! logs in to a board of the simulated lab (LAVA's `ssh` device type, `fixtures/lab/lava/sim/`), runs the
//! shipped test definition `fixtures/lab/lava/agl-parity.yaml` there with this build's `agl-parity` on a
//! small project (a passing, a failing and an unsupported scenario), and the test cases the dispatcher
//! records in its own log (`lvl: results`) are compared with the lines `--format lava` printed, read back
//! from the run's parity.json: every case once, with the same result, measurement and units.
//!
//! Ignored by default (needs root, sshd and lava-dispatcher); CI runs it with
//! `cargo test -p agl-parity --test lava -- --ignored`, where a missing `lava-run` fails it loudly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestProject;

const FEATURE: &str = r#"Feature: LAVA sample

  Scenario: Status heartbeat
    Given the "hvac" workload is running
    Then "HvacStatus" is sent every 100 ms ± 25%

  Scenario: A frame nobody sends
    Given the "hvac" workload is running
    Then within 300 ms a frame with id 0x7FF is seen

  @needs:flux-capacitor
  Scenario: Needs what nobody has
    Given the "hvac" workload is running
"#;

/// A test case as recorded: (set, result, measurement, units).
type Case = (Option<String>, String, Option<f64>, Option<String>);

fn lava_dir() -> PathBuf {
    common::repo().join("fixtures/lab/lava")
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A YAML scalar with LAVA's non-specific tags (`! "166"`) taken off.
fn untag(v: &serde_yaml::Value) -> &serde_yaml::Value {
    match v {
        serde_yaml::Value::Tagged(t) => untag(&t.value),
        v => v,
    }
}

fn text_of(v: &serde_yaml::Value) -> Option<String> {
    match untag(v) {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The test cases `--format lava` printed, parsed as lava-dispatcher parses them (set from TESTSET).
fn printed_cases(text: &str) -> BTreeMap<String, Case> {
    let signal = regex::Regex::new(r"<LAVA_SIGNAL_(\S+) ([^>]+)>").expect("regex");
    let mut set = None;
    let mut cases = BTreeMap::new();
    for c in signal.captures_iter(text) {
        let params: Vec<&str> = c[2].split_whitespace().collect();
        match (&c[1], params.as_slice()) {
            ("TESTSET", ["START", name]) => set = Some(name.to_string()),
            ("TESTSET", ["STOP"]) => set = None,
            ("TESTCASE", _) => {
                let kv: BTreeMap<String, String> = params
                    .iter()
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_lowercase(), v.to_string()))
                    .collect();
                let case = (
                    set.clone(),
                    kv["result"].clone(),
                    kv.get("measurement").map(|m| m.parse().expect("decimal")),
                    kv.get("units").cloned(),
                );
                assert!(
                    cases.insert(kv["test_case_id"].clone(), case).is_none(),
                    "{} printed twice",
                    kv["test_case_id"]
                );
            }
            (other, _) => panic!("unexpected signal {other} in {text}"),
        }
    }
    cases
}

#[test]
#[ignore = "needs root, sshd and lava-dispatcher (lava-run); CI: cargo test -p agl-parity --test lava -- --ignored"]
fn lava_run_records_the_cases_format_lava_prints_on_a_simulated_board() {
    let lava_run = which("lava-run").unwrap_or_else(|| {
        panic!("lava-run is not on PATH: apt-get install lava-dispatcher (Debian 12: 2023.01)")
    });
    let lab = common::board::sim_lab(&["ci-board"])
        .unwrap_or_else(|| panic!("this test needs the simulated lab (root, iproute2, openssh-server)"));
    let board = &lab.boards()[0];

    let p = TestProject::new();
    p.write("scenarios/lava.feature", FEATURE);
    let reports = p.path().join("reports");
    let work = tempfile::tempdir().expect("tempdir");

    let device = std::fs::read_to_string(lava_dir().join("sim/ssh-device.yaml"))
        .expect("ssh-device.yaml")
        .replace("@HOST@", &board.board_ip.to_string())
        .replace("@PORT@", "22")
        .replace("@USER@", "root")
        .replace("@IDENTITY_FILE@", &lab.client_key().display().to_string());
    let device_file = work.path().join("device.yaml");
    std::fs::write(&device_file, device).expect("write device");

    let mut job = yaml(&lava_dir().join("sim/job.yaml"));
    let definition = &mut job["actions"][2]["test"]["definitions"][0];
    definition["repository"] = yaml(&lava_dir().join("agl-parity.yaml"));
    let parameters = serde_yaml::Mapping::from_iter([
        ("AGL_PARITY".into(), env!("CARGO_BIN_EXE_agl-parity").into()),
        ("PROJECT".into(), p.path().display().to_string().into()),
        ("ENV".into(), "native".into()),
        (
            "EXTRA_ARGS".into(),
            format!(
                "--workloads {} --report-dir {}",
                common::workload_bins().display(),
                reports.display()
            )
            .into(),
        ),
    ]);
    definition["parameters"] = parameters.into();
    let job_file = work.path().join("job.yaml");
    std::fs::write(&job_file, serde_yaml::to_string(&job).expect("job yaml")).expect("write job");

    // The job id names what LAVA creates on the board (/lava-<id>...); the simulated board shares this
    // machine's filesystem, so that is removed below.
    let job_id = format!("{}", std::process::id());
    let out = Command::new(&lava_run)
        .args(["--job-id", &job_id, "--output-dir"])
        .arg(work.path().join("out"))
        .arg("--device")
        .arg(&device_file)
        .arg(&job_file)
        .output()
        .expect("lava-run runs");
    // What LAVA put on the board: /lava-<id> and the overlay it copied, /lava-<id>-overlay-*.tar.gz.
    let _ = std::fs::remove_dir_all(format!("/lava-{job_id}"));
    let overlay = format!("lava-{job_id}-overlay-");
    for e in std::fs::read_dir("/").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&overlay) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    std::fs::write(work.path().join("lava.log"), &log).expect("write log");
    assert!(out.status.success(), "lava-run failed:\n{log}");

    // LAVA's own records: every `results` line of the dispatcher's log.
    let mut recorded: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    let mut lava_suite: BTreeMap<String, String> = BTreeMap::new();
    for line in log.lines() {
        let Ok(entry) = serde_yaml::from_str::<serde_yaml::Value>(line) else {
            continue;
        };
        if entry["lvl"].as_str() != Some("results") {
            continue;
        }
        let msg = &entry["msg"];
        let (Some(definition), Some(case), Some(result)) = (
            text_of(&msg["definition"]),
            text_of(&msg["case"]),
            text_of(&msg["result"]),
        ) else {
            panic!("a result without definition, case or result: {line}");
        };
        if definition == "lava" {
            lava_suite.insert(case, result);
            continue;
        }
        assert_eq!(definition, "0_agl-parity", "{line}");
        recorded.entry(case).or_default().push((
            msg.get("set").and_then(text_of),
            result,
            msg.get("measurement")
                .and_then(text_of)
                .map(|m| m.parse().expect("measurement")),
            msg.get("units").and_then(text_of),
        ));
    }
    assert_eq!(
        lava_suite.get("job").map(String::as_str),
        Some("pass"),
        "{lava_suite:?}\n{log}"
    );
    assert_eq!(
        lava_suite.get("0_agl-parity").map(String::as_str),
        Some("pass"),
        "the test definition ran to its end: {lava_suite:?}"
    );

    // What `--format lava` printed for this run, rendered again from the run's parity.json.
    let dirs = agl_parity::merge::find_reports(&reports);
    assert_eq!(dirs.len(), 1, "one run on the board under {}", reports.display());
    let report = agl_parity::report::read_json(&dirs[0].join("parity.json")).expect("parity.json");
    let printed = printed_cases(&agl_parity::report::lava::render(&report));
    assert!(
        log.contains("<LAVA_SIGNAL_TESTSET START native>"),
        "the board printed the signals:\n{log}"
    );
    for (id, case) in &printed {
        let seen = recorded
            .get(id)
            .unwrap_or_else(|| panic!("{id} printed but not recorded by LAVA: {:?}", recorded.keys()));
        assert_eq!(seen.len(), 1, "{id} recorded once: {seen:?}");
        let seen = &seen[0];
        assert_eq!((&seen.0, &seen.1, &seen.3), (&case.0, &case.1, &case.3), "{id}");
        match (seen.2, case.2) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{id}: {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "{id}"),
        }
    }
    assert_eq!(
        recorded.len(),
        printed.len(),
        "LAVA recorded nothing else: {:?}",
        recorded
            .keys()
            .filter(|k| !printed.contains_key(*k))
            .collect::<Vec<_>>()
    );

    let result = |id: &str| {
        recorded
            .get(id)
            .map(|c| c[0].1.clone())
            .unwrap_or_else(|| panic!("no {id}: {:?}", recorded.keys()))
    };
    assert_eq!(result("lava_feature_3_status_heartbeat__native"), "pass");
    assert_eq!(result("lava_feature_3_status_heartbeat__parity"), "pass");
    assert_eq!(result("lava_feature_7_a_frame_nobody_sends__native"), "fail");
    assert_eq!(result("lava_feature_7_a_frame_nobody_sends__parity"), "fail");
    assert_eq!(result("lava_feature_12_needs_what_nobody_has__native"), "skip");
    assert_eq!(result("lava_feature_12_needs_what_nobody_has__parity"), "skip");
    let period = &recorded["lava_feature_3_status_heartbeat__native__period_hvacstatus"][0];
    assert_eq!(period.0.as_deref(), Some("native"));
    assert_eq!(period.3.as_deref(), Some("ms"));
    let ms = period.2.expect("a measurement");
    assert!((75.0..125.0).contains(&ms), "heartbeat period {ms} ms");
    assert!(
        recorded.contains_key("lava_feature_3_status_heartbeat__native__ready_hvac"),
        "deploy to ready is measured"
    );
}

/// The board job template is a valid LAVA job (lava_common's own schema, strict), once its placeholders
/// are filled in.
#[test]
#[ignore = "needs lava-dispatcher (python3 lava_common); CI: cargo test -p agl-parity --test lava -- --ignored"]
fn the_agl_board_job_template_passes_lavas_job_schema() {
    let template =
        std::fs::read_to_string(lava_dir().join("agl-board-job.yaml")).expect("agl-board-job.yaml");
    let filled = regex::Regex::new(r"\$\{([A-Z_]+)\}")
        .expect("regex")
        .replace_all(&template, |c: &regex::Captures| match &c[1] {
            "ENV" => "native".to_string(),
            "TAGS" | "AGL_PARITY_URL" => String::new(),
            "PROJECT" => "/opt/agl-parity/project".to_string(),
            "TESTDEF_REPO" => "https://example.org/agl-parity.git".to_string(),
            other => format!("https://example.org/{}", other.to_lowercase()),
        })
        .to_string();
    let work = tempfile::tempdir().expect("tempdir");
    let job = work.path().join("job.yaml");
    std::fs::write(&job, filled).expect("write");
    let lava_run = which("lava-run").unwrap_or_else(|| panic!("lava-run is not on PATH"));
    let out = Command::new(python_of(&lava_run))
        .arg("-c")
        .arg(
            "import sys, yaml\nfrom lava_common.schemas import validate\n\
             validate(yaml.safe_load(open(sys.argv[1])), strict=True)\nprint('valid')",
        )
        .arg(&job)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(tool))
        .find(|p| p.is_file())
}

/// The Python running `lava-run` (its `#!` line; Debian's is /usr/bin/python3).
fn python_of(lava_run: &Path) -> PathBuf {
    let text = std::fs::read_to_string(lava_run).unwrap_or_default();
    let first = text.lines().next().unwrap_or_default();
    match first.strip_prefix("#!").map(str::trim) {
        Some(p) if p.ends_with("python3") => PathBuf::from(p),
        _ => PathBuf::from("/usr/bin/python3"),
    }
}
