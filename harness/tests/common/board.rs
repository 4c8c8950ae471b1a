//! The simulated lab for tests: real sshd "boards" in network namespaces ([`agl_parity::lab::sim`]).
//! Without root/iproute2/sshd the tests using it print a loud SKIP, or fail when `AGL_PARITY_REQUIRE` names
//! `board` (CI).

use agl_parity::lab::sim::{self, SimLab};

/// Starts simulated boards `names`, or explains why not (panicking when CI requires boards).
pub fn sim_lab(names: &[&str]) -> Option<SimLab> {
    match sim::start_for_tests(names) {
        Ok(lab) => Some(lab),
        Err(why) => {
            let required = std::env::var("AGL_PARITY_REQUIRE").unwrap_or_default();
            if required.split(',').any(|r| r == "board" || r == "all") {
                panic!("the board environment is required but no simulated lab can run here: {why}");
            }
            eprintln!("!!!!!!!! SKIPPED: no simulated board: {why}");
            None
        }
    }
}

/// Pids of processes whose environment carries `needle` (`AGL_PARITY_RUN=<id>`).
pub fn processes_with(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Polls `cond` every 50 ms until it holds or `secs` pass.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
