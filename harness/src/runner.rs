//! The parity runner: every selected scenario once per environment, on cucumber-rs, then the comparison.
//!
//! A run sweeps up what killed runs left, registers itself ([`crate::cleanup`]), reads the project
//! ([`crate::project`]: manifests, DBC, parity configuration, workload sources), loads features and fixtures, and makes one cucumber pass per environment with the step library of
//! [`crate::steps`] (`--repeat N`: N passes per environment, one after another, each record carrying its
//! repeat number). An environment that cannot be created or prepared marks its scenarios as infra-errors
//! and the run goes on. The records of all passes go to [`crate::parity`] and into a [`RunReport`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cucumber::gherkin;
use cucumber::{cli, parser, writer, Event};
use futures::future::LocalBoxFuture;

use crate::cleanup::{self, RunGuard};
use crate::config::ParityConfig;
use crate::env::{self, ColumnError, RunContext, Setup};
use crate::error::InfraError;
use crate::features::{self, FeatureSet};
use crate::fixtures::Fixtures;
use crate::lab::Lab;
use crate::parity::{self, EnvSummary, RunReport};
use crate::progress::Progress;
use crate::project::Project;
use crate::record::{Outcome, ScenarioId, ScenarioRun};
use crate::steps;
use crate::workload::WorkloadCatalog;
use crate::world::{EnvPass, PassSettings, ScenarioWorld};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run_id: String,
    pub project_dir: PathBuf,
    /// Feature files or directories.
    pub scenario_paths: Vec<PathBuf>,
    /// Environment columns, in order (`native`, `container`, ...).
    pub environments: Vec<String>,
    /// Tag expression (`@hvac and not @slow`).
    pub tags: Option<String>,
    /// Regex on scenario names.
    pub name_filter: Option<String>,
    /// Scenarios run at once per environment.
    pub concurrency: usize,
    /// Reports are written to `<report_root>/<run id>/`.
    pub report_root: PathBuf,
    pub step_timeout: Duration,
    pub ready_timeout: Duration,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
    /// A directory of workload executables tried before the project's own workload sources
    /// (`--workloads DIR`).
    pub prebuilt_workloads: Option<PathBuf>,
    /// Triggered to stop the run early (Ctrl-C).
    pub interrupt: crate::interrupt::Interrupt,
    /// Lab inventory for `board:<name>` columns (`--env board` means every board of it).
    pub lab: Option<PathBuf>,
    /// Run the environment columns at the same time instead of one after another (boards of a lab).
    pub parallel_environments: bool,
    /// How CAN reaches the workloads (`--can-transport`).
    pub can_transport: crate::env::socketcan::CanTransport,
    /// A recorded reference compared as one more column (`--reference`).
    pub reference: Option<PathBuf>,
    /// Seed of the run's random faults (`--seed`; a fresh one by default, given in the report).
    pub seed: u64,
    /// Every scenario runs this many times per environment (`--repeat N`, one cucumber pass after
    /// another), so that parity can tell noise from drift ([`crate::parity`]). At least 1.
    pub repeat: u32,
    /// Third-party tools on the scenario buses (the project file's `bridges:`, `--socketcand`). With any,
    /// scenarios run one at a time and environments one after another: a bridge's port or path is per bus
    /// name.
    pub bridges: crate::bridges::BridgeSettings,
}

impl RunOptions {
    /// Options for every scenario of `project` on the native environment, its reports and lab inventory
    /// from the project file, the CLI's default limits.
    pub fn new(project: &Project) -> RunOptions {
        RunOptions {
            run_id: new_run_id(),
            project_dir: project.root.clone(),
            scenario_paths: project.scenarios.clone(),
            environments: vec!["native".into()],
            tags: None,
            name_filter: None,
            concurrency: 4,
            report_root: project.reports.clone(),
            step_timeout: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(15),
            progress: false,
            prebuilt_workloads: None,
            interrupt: Default::default(),
            lab: project.lab.clone(),
            parallel_environments: false,
            can_transport: Default::default(),
            reference: None,
            seed: fresh_seed(),
            repeat: repeat_from_env(),
            bridges: project.bridges.clone(),
        }
    }
}

/// A seed for a run that was given none: from the clock and the pid.
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000
}

/// `AGL_PARITY_REPEAT` if it is a positive number, else 1.
pub fn repeat_from_env() -> u32 {
    std::env::var("AGL_PARITY_REPEAT")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown environment `{name}` (known: {known})")]
    UnknownEnvironment { name: String, known: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot prepare the run: {0}")]
    Setup(String),
}

/// Every finished scenario record of a run, kept in memory and appended to `records.jsonl` in the report
/// directory as it happens, so that an interrupted or killed run loses nothing already recorded.
pub struct Journal {
    runs: Mutex<Vec<ScenarioRun>>,
    file: Mutex<Option<std::fs::File>>,
    environments: Mutex<Vec<EnvSummary>>,
}

impl Journal {
    pub fn new() -> Arc<Journal> {
        Arc::new(Journal {
            runs: Mutex::new(Vec::new()),
            file: Mutex::new(None),
            environments: Mutex::new(Vec::new()),
        })
    }

    fn open(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        if let Ok(mut f) = self.file.lock() {
            *f = Some(file);
        }
        Ok(())
    }

    /// Adds a record (and appends it to the journal file).
    pub fn push(&self, run: ScenarioRun) {
        if let (Ok(mut file), Ok(line)) = (self.file.lock(), serde_json::to_string(&run)) {
            if let Some(f) = file.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
        }
        if let Ok(mut runs) = self.runs.lock() {
            runs.push(run);
        }
    }

    pub fn runs(&self) -> Vec<ScenarioRun> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn runs_of(&self, env: &str) -> Vec<ScenarioRun> {
        self.runs
            .lock()
            .map(|r| r.iter().filter(|x| x.env == env).cloned().collect())
            .unwrap_or_default()
    }

    fn add_environment(&self, summary: EnvSummary) {
        if let Ok(mut e) = self.environments.lock() {
            e.push(summary);
        }
    }

    pub fn environments(&self) -> Vec<EnvSummary> {
        self.environments.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Reads the records a (possibly killed) run appended to `records.jsonl`; bad lines are reported by number.
pub fn read_journal(path: &std::path::Path) -> Result<Vec<ScenarioRun>, JournalError> {
    let text = std::fs::read_to_string(path).map_err(|e| JournalError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            // A run killed mid-write leaves a truncated last line; everything before it is kept.
            Err(e) if i + 1 == lines.len() => {
                tracing::warn!(line = i + 1, error = %e, "ignoring a truncated last record")
            }
            Err(e) => {
                return Err(JournalError::Record {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// Why a run's `records.jsonl` cannot be read back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("{}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}:{line}: {reason}", .path.display())]
    Record {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// A finished run.
pub struct RunOutcome {
    pub report: RunReport,
    pub report_dir: PathBuf,
}

/// Samples the run's workload processes every half second until told to stop ([`crate::footprint`]).
fn footprint_sampler(
    run_id: String,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Option<crate::footprint::Footprint>>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let harness = std::process::id() as i32;
        let mut sampler = crate::footprint::FootprintSampler::default();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {
                    let id = run_id.clone();
                    sampler = tokio::task::spawn_blocking(move || {
                        sampler.sample(&id, harness);
                        sampler
                    })
                    .await
                    .unwrap_or_default();
                }
            }
        }
        sampler.footprint()
    });
    (stop, task)
}

/// A new run id: UTC time plus a 16-bit salt from the pid, the clock and a per-process counter, so a clash
/// is unlikely; [`RunGuard::register`] refuses one.
pub fn new_run_id() -> String {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let now = chrono::Utc::now();
    let count = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let salt = (std::process::id().wrapping_mul(0x9E37_79B9) ^ now.timestamp_subsec_nanos() ^ count) & 0xffff;
    format!("{}-{salt:04x}", now.format("%Y%m%d-%H%M%S"))
}

/// Runs everything `options` selects and compares the environments. Finished records go to `journal` as
/// they happen (see [`partial_report`] for an interrupted run).
pub async fn run(options: RunOptions, journal: Arc<Journal>) -> Result<RunOutcome, RunError> {
    let project = Project::load(&options.project_dir).map_err(|e| RunError::Usage(e.to_string()))?;
    let lab = match &options.lab {
        Some(path) => Some(Arc::new(
            Lab::load(path).map_err(|e| RunError::Usage(e.to_string()))?,
        )),
        None => None,
    };
    let environments = resolve_environments(&options.environments, lab.as_deref())?;
    let tag_expr = options
        .tags
        .as_deref()
        .map(features::parse_tag_expression)
        .transpose()
        .map_err(|e| RunError::Usage(e.to_string()))?;
    let name_re = options
        .name_filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| RunError::Usage(format!("invalid --name regex: {e}")))?;
    let config = ParityConfig::load(&project.parity).map_err(|e| RunError::Usage(e.to_string()))?;
    let reference: Option<Arc<crate::reference::Reference>> = match &options.reference {
        Some(path) => Some(Arc::new(
            crate::reference::Reference::load(path).map_err(|e| RunError::Usage(e.to_string()))?,
        )),
        None => None,
    };

    let root = cleanup::state_root();
    let swept = cleanup::sweep(&root);
    if !swept.is_empty() {
        tracing::warn!(runs = ?swept.runs, processes = swept.processes, "removed leftovers of killed runs");
    }
    let setup = Setup { lab: lab.as_deref() };
    for (env, item) in env::sweep(&cleanup::live_runs(&root), setup).await {
        tracing::warn!(%item, env, "removed leftover of a killed run");
    }
    let run_id = options.run_id.clone();
    let guard = RunGuard::register(&root, &run_id)
        .map_err(|e| RunError::Setup(format!("{}: {e}", root.display())))?;
    let report_dir = options.report_root.join(&run_id);
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| RunError::Setup(format!("{}: {e}", report_dir.display())))?;
    journal
        .open(&report_dir.join("records.jsonl"))
        .map_err(|e| RunError::Setup(format!("{}: {e}", report_dir.display())))?;
    let bridges = Arc::new(
        crate::bridges::RunBridges::start(options.bridges.clone())
            .map_err(|e| RunError::Setup(e.to_string()))?,
    );
    for line in bridges.describe() {
        eprintln!("bridge: {line}");
    }
    if !bridges.is_empty() && (options.concurrency > 1 || options.parallel_environments) {
        eprintln!(
            "bridge: scenarios run one at a time (a bridge's port or path belongs to one bus at a time)"
        );
    }
    let settings = Arc::new(PassSettings {
        bridges: Arc::clone(&bridges),
        project_dir: options.project_dir.clone(),
        report_dir: report_dir.clone(),
        step_timeout: options.step_timeout,
        ready_timeout: options.ready_timeout,
        interrupt: options.interrupt.clone(),
        seed: options.seed,
        reference: reference.clone().zip(options.reference.clone()),
    });

    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let feature_set = FeatureSet::load(&options.scenario_paths);
    let fixtures = Arc::new(Fixtures::from_paths(&project.manifests, &project.dbc));
    // The parity settings against the project's DBC and manifests (a mask naming no signal, a default bus
    // no workload joins): said loudly, and the run goes on (such a setting only does nothing).
    let config_warnings = match config.check_against(&project.parity, &fixtures) {
        Ok(warnings) => warnings,
        Err(e) => vec![e.to_string()],
    };
    // Once, on stderr (the CLI's log goes there too: a `tracing::warn!` as well would print it twice).
    for w in &config_warnings {
        eprintln!("warning: {w}");
    }
    let config = Arc::new(config);
    let run_ctx = RunContext {
        run_id: run_id.clone(),
        state_dir: guard.dir().to_path_buf(),
        catalog: Arc::new(WorkloadCatalog::for_project(
            &project,
            options.prebuilt_workloads.as_deref(),
        )),
        can_transport: options.can_transport,
    };

    let progress = Progress::new(options.progress);
    for e in &feature_set.errors {
        progress.line(&format!("  ERROR  {e}"));
    }
    let shared = PassShared {
        options: &options,
        journal: &journal,
        feature_set: &feature_set,
        fixtures: &fixtures,
        config: &config,
        run_ctx: &run_ctx,
        settings: &settings,
        progress: &progress,
        tag_expr: tag_expr.as_ref(),
        name_re: name_re.as_ref(),
        lab: lab.as_deref(),
    };
    if options.parallel_environments && bridges.is_empty() {
        let passes = environments.iter().map(|e| run_environment(&shared, e));
        for result in futures::future::join_all(passes).await {
            result?;
        }
    } else {
        for env_name in &environments {
            run_environment(&shared, env_name).await?;
        }
    }
    drop(progress);
    if let Some(r) = bridges.stop() {
        for line in r.lines() {
            tracing::info!("bridge node {line}");
        }
    }
    let mut report = assemble(
        &run_id,
        started_at,
        started.elapsed(),
        &journal,
        &feature_set,
        &config,
    );
    report.manifests = fixtures.manifest_summary(&options.project_dir);
    report.seed = Some(options.seed);
    if let (Some(reference), Some(path)) = (&reference, &options.reference) {
        add_reference(&mut report, reference, path, &report_dir, &config);
    }
    drop(guard);
    sweep_environments(setup).await;
    Ok(RunOutcome { report, report_dir })
}

/// Puts the reference's records of the scenarios this run ran beside the run's columns and judges again.
fn add_reference(
    report: &mut RunReport,
    reference: &crate::reference::Reference,
    path: &std::path::Path,
    report_dir: &std::path::Path,
    config: &ParityConfig,
) {
    let selected: std::collections::BTreeSet<ScenarioId> = report.runs.iter().map(|r| r.id.clone()).collect();
    let runs = reference.column_runs(path, report_dir, &selected);
    let missing = reference.missing(&selected);
    report.environments.push(reference.summary(&runs, &missing));
    report.runs.extend(runs);
    report.runs.sort_by(|a, b| (&a.id, &a.env).cmp(&(&b.id, &b.env)));
    report.scenarios = parity::compare(&report.runs, config);
}

/// Expands each name into the columns it stands for (`board` is every board of the lab) and checks them.
pub fn resolve_environments(names: &[String], lab: Option<&Lab>) -> Result<Vec<String>, RunError> {
    let setup = Setup { lab };
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let expanded = env::columns(name, setup).map_err(|e| match e {
            ColumnError::Unknown(name) => RunError::UnknownEnvironment {
                name,
                known: env::known_columns(setup).join(", "),
            },
            e @ ColumnError::NeedsLab(_) => RunError::Usage(e.to_string()),
        })?;
        for e in expanded {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// What every environment pass of a run reads.
struct PassShared<'a> {
    options: &'a RunOptions,
    journal: &'a Arc<Journal>,
    feature_set: &'a FeatureSet,
    fixtures: &'a Arc<Fixtures>,
    config: &'a Arc<ParityConfig>,
    run_ctx: &'a RunContext,
    settings: &'a Arc<PassSettings>,
    progress: &'a Progress,
    tag_expr: Option<&'a gherkin::tagexpr::TagOperation>,
    name_re: Option<&'a regex::Regex>,
    lab: Option<&'a Lab>,
}

/// One environment column: create and prepare the environment, run its cucumber pass, record the summary.
async fn run_environment(s: &PassShared<'_>, env_name: &str) -> Result<(), RunError> {
    let (options, journal) = (s.options, s.journal);
    let env_started = Instant::now();
    let mut selected: Vec<(ScenarioId, String, String, Vec<String>)> = s
        .feature_set
        .scenarios()
        .iter()
        .filter(|sc| {
            let tags = sc.tags();
            features::runs_in(&tags, env_name)
                && features::selected(s.tag_expr, &tags)
                && s.name_re.is_none_or(|re| re.is_match(&sc.scenario.name))
        })
        .map(|sc| {
            let id = ScenarioId::new(
                &options.project_dir,
                sc.feature.path.as_deref(),
                sc.scenario.position.line,
            );
            (id, sc.feature.name.clone(), sc.scenario.name.clone(), sc.tags())
        })
        .collect();
    let repeats = options.repeat.max(1);
    let bar = s.progress.environment(env_name, selected.len(), repeats);
    let mut summary = EnvSummary {
        name: env_name.to_string(),
        ..EnvSummary::default()
    };
    let environment = match env::create(env_name, s.run_ctx, Setup { lab: s.lab }) {
        Ok(e) => e,
        Err(e) => {
            summary.unavailable = Some(e.to_string());
            infra_records(&selected, env_name, &e.to_string())
                .into_iter()
                .for_each(|r| journal.push(r));
            bar.finish_with(&format!("unavailable: {e}"));
            journal.add_environment(summary);
            return Ok(());
        }
    };
    summary.transport = environment.transport();
    summary.enforces = environment.enforces();
    summary.notes = environment.notes();
    // Scenarios needing a capability this environment lacks are reported, not run.
    let capabilities = environment.capabilities();
    selected.retain(|(id, feature_name, name, tags)| {
        let unmet = crate::lab::unmet(tags, &capabilities);
        if unmet.is_empty() {
            return true;
        }
        let mut record = infra_record(
            id,
            feature_name,
            name,
            tags,
            env_name,
            &format!(
                "unsupported here: needs {} (offers {})",
                unmet
                    .iter()
                    .map(|n| format!("@needs:{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                capabilities.join(", ")
            ),
        );
        record.outcome = Outcome::Unsupported;
        record.transport = summary.transport.clone();
        bar.scenario_finished(&record);
        // Recorded once, whatever the repeat count: the bar skips its other repeats.
        bar.advance(u64::from(repeats) - 1);
        journal.push(record);
        false
    });
    bar.message("preparing");
    if let Err(e) = environment.prepare(s.run_ctx).await {
        let mut records = infra_records(&selected, env_name, &e.to_string());
        // The environment cannot run this project's workloads at all (e.g. container images only): its
        // scenarios are unsupported here, and the environment itself is not broken.
        if matches!(e, InfraError::Unsupported { .. }) {
            for r in &mut records {
                r.outcome = Outcome::Unsupported;
                r.message = Some(format!("unsupported here: {e}"));
                r.transport = summary.transport.clone();
            }
            bar.finish_with(&format!("unsupported here: {e}"));
        } else {
            summary.unavailable = Some(e.to_string());
            bar.finish_with(&format!("preparation failed: {e}"));
        }
        records.into_iter().for_each(|r| journal.push(r));
        count(&mut summary, &journal.runs_of(env_name));
        journal.add_environment(summary);
        return Ok(());
    }
    bar.message("running");
    let wanted: Vec<ScenarioId> = selected.iter().map(|sc| sc.0.clone()).collect();
    let concurrency = match environment.max_concurrency() {
        Some(max) => options.concurrency.min(max),
        None => options.concurrency,
    };
    let concurrency = if s.settings.bridges.is_empty() {
        concurrency
    } else {
        1
    };
    // What the environment spends beside its workloads, sampled while its scenarios run. With columns in
    // parallel the run's processes cannot be told apart by column, so nothing is sampled then.
    let sampler = (!options.parallel_environments).then(|| footprint_sampler(s.run_ctx.run_id.clone()));
    for repeat in 0..repeats {
        if wanted.is_empty() || options.interrupt.is_set() {
            break;
        }
        if repeats > 1 {
            bar.message(&format!("running (repeat {}/{repeats})", repeat + 1));
        }
        let on_finished = {
            let bar = bar.clone();
            let journal = journal.clone();
            Box::new(move |run: &ScenarioRun| {
                bar.scenario_finished(run);
                journal.push(run.clone());
            }) as Box<dyn Fn(&ScenarioRun) + Send + Sync>
        };
        let pass = Arc::new(
            EnvPass::new(
                environment.clone(),
                s.run_ctx.clone(),
                s.fixtures.clone(),
                s.config.clone(),
                s.settings.clone(),
                on_finished,
            )
            .with_repeat(repeat, repeats),
        );
        run_pass(pass, s.feature_set.features.clone(), wanted.clone(), concurrency).await?;
        // A scenario that produced no record in this repeat (should not happen) is reported rather than lost.
        let done = journal.runs_of(env_name);
        for (id, feature_name, name, tags) in &selected {
            if !done.iter().any(|r| &r.id == id && r.repeat == repeat) {
                let mut record = infra_record(
                    id,
                    feature_name,
                    name,
                    tags,
                    env_name,
                    "the scenario produced no result",
                );
                record.repeat = repeat;
                journal.push(record);
            }
        }
    }
    if let Some((stop, task)) = sampler {
        let _ = stop.send(());
        summary.footprint = task.await.ok().flatten();
    }
    environment.finish(s.run_ctx).await;
    summary.wall_ms = env_started.elapsed().as_secs_f64() * 1000.0;
    count(&mut summary, &journal.runs_of(env_name));
    let flaky = if summary.flaky > 0 {
        format!(", {} flaky", summary.flaky)
    } else {
        String::new()
    };
    bar.finish_with(&format!(
        "{} passed, {} failed, {} infra-errors{flaky}, {} unsupported here",
        summary.passed, summary.failed, summary.infra_errors, summary.unsupported
    ));
    journal.add_environment(summary);
    Ok(())
}

fn count(summary: &mut EnvSummary, runs: &[ScenarioRun]) {
    parity::count_outcomes(summary, runs);
}

/// [`sweep_environments`] with the lab at `path`, so that its boards are swept too.
pub async fn sweep_lab(path: &std::path::Path) {
    match Lab::load(path) {
        Ok(lab) => sweep_environments(Setup { lab: Some(&lab) }).await,
        Err(_) => sweep_environments(Setup::default()).await,
    }
}

/// Lets every environment remove what runs that are no longer alive left behind (this run included, once
/// its guard is gone).
pub async fn sweep_environments(setup: Setup<'_>) {
    let live = cleanup::live_runs(&cleanup::state_root());
    for (env, item) in env::sweep(&live, setup).await {
        tracing::info!(%item, env, "swept");
    }
}

/// Builds the report from what the journal holds.
fn assemble(
    run_id: &str,
    started_at: String,
    elapsed: Duration,
    journal: &Journal,
    feature_set: &FeatureSet,
    config: &ParityConfig,
) -> RunReport {
    let mut runs = journal.runs();
    runs.sort_by(|a, b| (&a.id, &a.env, a.repeat).cmp(&(&b.id, &b.env, b.repeat)));
    RunReport {
        schema_version: crate::parity::SCHEMA_VERSION,
        run_id: run_id.to_string(),
        started_at,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        host: host_description(),
        environments: journal.environments(),
        scenarios: parity::compare(&runs, config),
        feature_errors: feature_set.errors.iter().map(Into::into).collect(),
        runs,
        manifests: Default::default(),
        seed: None,
        timing_test: parity::timing_test_name(config),
    }
}

/// The report of an interrupted run: whatever finished before the interruption.
pub fn partial_report(options: &RunOptions, journal: &Journal, elapsed: Duration) -> RunReport {
    let config = ParityConfig::load(&parity_path(&options.project_dir)).unwrap_or_default();
    let mut envs = journal.environments();
    let lab = options.lab.as_deref().and_then(|p| Lab::load(p).ok());
    let columns = resolve_environments(&options.environments, lab.as_ref())
        .unwrap_or_else(|_| options.environments.clone());
    for name in &columns {
        if !envs.iter().any(|e| &e.name == name) {
            envs.push(EnvSummary {
                name: name.clone(),
                unavailable: Some("interrupted before this environment finished".into()),
                ..EnvSummary::default()
            });
        }
    }
    let mut report = assemble(
        &options.run_id,
        String::new(),
        elapsed,
        journal,
        &FeatureSet::default(),
        &config,
    );
    report.environments = envs;
    report
}

/// Rebuilds a report from the `records.jsonl` of a run directory (e.g. of a killed run).
pub fn report_from_journal(
    dir: &std::path::Path,
    project_dir: &std::path::Path,
) -> Result<RunReport, JournalError> {
    let runs = read_journal(&dir.join("records.jsonl"))?;
    let config = ParityConfig::load(&parity_path(project_dir)).unwrap_or_default();
    let mut envs: Vec<EnvSummary> = Vec::new();
    for r in &runs {
        if !envs.iter().any(|e| e.name == r.env) {
            envs.push(EnvSummary {
                name: r.env.clone(),
                transport: r.transport.clone(),
                ..EnvSummary::default()
            });
        }
        if let Some(e) = envs.iter_mut().find(|e| e.name == r.env) {
            e.wall_ms += r.duration_ms;
        }
    }
    for e in &mut envs {
        let of_env: Vec<ScenarioRun> = runs.iter().filter(|r| r.env == e.name).cloned().collect();
        parity::count_outcomes(e, &of_env);
    }
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let journal = Journal {
        runs: Mutex::new(runs),
        file: Mutex::new(None),
        environments: Mutex::new(envs),
    };
    Ok(assemble(
        &run_id,
        String::new(),
        Duration::ZERO,
        &journal,
        &FeatureSet::default(),
        &config,
    ))
}

/// The parity configuration file of the project at `project_dir` (its project file's `parity:`, else the
/// default place).
fn parity_path(project_dir: &std::path::Path) -> PathBuf {
    Project::load(project_dir)
        .map(|p| p.parity)
        .unwrap_or_else(|_| ParityConfig::path_in(project_dir))
}

fn host_description() -> String {
    let uname = nix::sys::utsname::uname().ok();
    match uname {
        Some(u) => format!(
            "{} {} {} ({} cpus)",
            u.sysname().to_string_lossy(),
            u.release().to_string_lossy(),
            u.machine().to_string_lossy(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        ),
        None => "unknown".into(),
    }
}

fn infra_record(
    id: &ScenarioId,
    feature_name: &str,
    name: &str,
    tags: &[String],
    env: &str,
    message: &str,
) -> ScenarioRun {
    ScenarioRun {
        id: id.clone(),
        feature_name: feature_name.to_string(),
        name: name.to_string(),
        tags: tags.to_vec(),
        env: env.to_string(),
        transport: String::new(),
        outcome: Outcome::InfraError,
        message: Some(message.to_string()),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_ms: 0.0,
        steps: Vec::new(),
        metrics: Vec::new(),
        buses: Vec::new(),
        workloads: Vec::new(),
        repeat: 0,
    }
}

fn infra_records(
    selected: &[(ScenarioId, String, String, Vec<String>)],
    env: &str,
    message: &str,
) -> Vec<ScenarioRun> {
    selected
        .iter()
        .map(|(id, f, n, t)| infra_record(id, f, n, t, env, message))
        .collect()
}

/// The pre-parsed features, as a cucumber parser.
struct FeatureList(Vec<gherkin::Feature>);

impl cucumber::Parser<()> for FeatureList {
    type Cli = cli::Empty;
    type Output = futures::stream::Iter<std::vec::IntoIter<parser::Result<gherkin::Feature>>>;

    fn parse(self, _input: (), _cli: Self::Cli) -> Self::Output {
        futures::stream::iter(self.0.into_iter().map(Ok).collect::<Vec<_>>())
    }
}

/// Cucumber's event stream is not needed: records come from the World. This writer discards events.
struct Discard;

impl cucumber::Writer<ScenarioWorld> for Discard {
    type Cli = cli::Empty;

    async fn handle_event(
        &mut self,
        event: parser::Result<Event<cucumber::event::Cucumber<ScenarioWorld>>>,
        _cli: &Self::Cli,
    ) {
        if let Err(e) = event {
            tracing::warn!(error = %e, "cucumber reported a parse error");
        }
    }
}

impl writer::Normalized for Discard {}

fn before_hook(
    pass: Arc<EnvPass>,
) -> impl for<'a> Fn(
    &'a gherkin::Feature,
    Option<&'a gherkin::Rule>,
    &'a gherkin::Scenario,
    &'a mut ScenarioWorld,
) -> LocalBoxFuture<'a, ()> {
    move |feature, rule, scenario, world| {
        let pass = pass.clone();
        Box::pin(async move { world.begin(pass, feature, rule, scenario) })
    }
}

fn after_hook(
    pass: Arc<EnvPass>,
) -> impl for<'a> Fn(
    &'a gherkin::Feature,
    Option<&'a gherkin::Rule>,
    &'a gherkin::Scenario,
    &'a cucumber::event::ScenarioFinished,
    Option<&'a mut ScenarioWorld>,
) -> LocalBoxFuture<'a, ()> {
    move |_feature, _rule, _scenario, finished, world| {
        let pass = pass.clone();
        Box::pin(async move {
            let Some(world) = world else { return };
            if let Some(record) = world.finish(finished).await {
                (pass.on_finished)(&record);
            }
        })
    }
}

/// One cucumber pass over `features`, running only the scenarios in `wanted`.
async fn run_pass(
    pass: Arc<EnvPass>,
    features: Vec<gherkin::Feature>,
    wanted: Vec<ScenarioId>,
    concurrency: usize,
) -> Result<(), RunError> {
    steps::install_quiet_panic_hook();
    let collection = steps::collection().map_err(|e| RunError::Setup(format!("step definitions: {e}")))?;
    let runner = cucumber::runner::Basic::default()
        .steps(collection)
        .max_concurrent_scenarios(concurrency.max(1))
        .before(before_hook(pass.clone()))
        .after(after_hook(pass.clone()));
    // The closure owns the list: it is only read.
    let wanted: std::collections::HashSet<ScenarioId> = wanted.into_iter().collect();
    let filter_pass = pass.clone();
    let filter =
        move |feature: &gherkin::Feature, _rule: Option<&gherkin::Rule>, scenario: &gherkin::Scenario| {
            let id = filter_pass.scenario_id(feature, scenario);
            wanted.contains(&id)
        };
    cucumber::Cucumber::<ScenarioWorld, _, (), _, _, cli::Empty>::custom(
        FeatureList(features),
        runner,
        Discard,
    )
    .with_cli(cli::Opts::<
        cli::Empty,
        cucumber::runner::basic::Cli,
        cli::Empty,
        cli::Empty,
    >::default())
    .filter_run((), filter)
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_columns_come_from_the_lab() {
        let lab = Lab::parse(
            "boards:\n  - { name: a, arch: x86_64, ssh: { host: h, key: k } }\n  - { name: b, arch: aarch64, ssh: { host: h, key: k } }\n",
            std::path::Path::new("lab.yaml"),
        )
        .unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_environments(&names(&["native", "board"]), Some(&lab)).unwrap(),
            names(&["native", "board:a", "board:b"])
        );
        assert_eq!(
            resolve_environments(&names(&["board:b", "board"]), Some(&lab)).unwrap(),
            names(&["board:b", "board:a"])
        );
        let unknown = resolve_environments(&names(&["board:c"]), Some(&lab))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("unknown environment `board:c`") && unknown.contains("board:a"),
            "{unknown}"
        );
        let no_lab = resolve_environments(&names(&["board:a"]), None)
            .unwrap_err()
            .to_string();
        assert!(no_lab.contains("needs a lab inventory: --lab FILE"), "{no_lab}");
        assert!(resolve_environments(&names(&["nope"]), None).is_err());
    }
}
