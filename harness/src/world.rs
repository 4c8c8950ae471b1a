//! The cucumber World: the state of one scenario in one environment.
//!
//! A [`ScenarioWorld`] owns the scenario's buses, its deployed pods, the *mark* (the moment of the last
//! stimulus, from which `within …` deadlines count) and the step records. [`ScenarioWorld::finish`] tears
//! everything down and turns it into a [`ScenarioRun`]: outcome, step timings, traces, drops and logs; each
//! bus's tape is put in the form parity compares by [`crate::parity::normalise`].
//! Dropping a World without finishing it (a cancelled run) still kills its processes and stops its buses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cucumber::gherkin;

use crate::bus::{now_ns, write_candump, BusSummary, ScenarioBus, TracedFrame};
use crate::config::ParityConfig;
use crate::env::contract::{DeployRequest, Environment, Instance, RunContext};
use crate::error::InfraError;
use crate::fixtures::Fixtures;
use crate::parity::normalise;
use crate::record::{
    BusRun, Metric, NodeDrops, Outcome, ScenarioId, ScenarioRun, StepRun, StepStatus, WorkloadRun,
};

/// Grace period for stopping workloads at teardown.
const TEARDOWN_GRACE: Duration = Duration::from_millis(500);
/// Frames per bus kept for the report's timeline plot.
const TIMELINE_LIMIT: usize = 2000;

/// The run's settings every scenario of every environment pass reads: built once from the run options and
/// shared (`Arc`) by the passes.
#[derive(Clone)]
pub struct PassSettings {
    /// Project root; feature paths in records are relative to it.
    pub project_dir: PathBuf,
    /// This run's report directory.
    pub report_dir: PathBuf,
    pub step_timeout: Duration,
    pub ready_timeout: Duration,
    pub interrupt: crate::interrupt::Interrupt,
    /// The run's fault seed; each fault's own is derived from it, the scenario and the fault's place.
    pub seed: u64,
    /// The recorded reference of `--reference` and its file, whose traces a step can replay.
    pub reference: Option<(Arc<crate::reference::Reference>, PathBuf)>,
    /// The run's third-party bridges (socketcand server; slcan and cannelloni per bus).
    pub bridges: Arc<crate::bridges::RunBridges>,
}

/// What every scenario of one environment pass shares; the run-wide settings are in [`PassSettings`].
pub struct EnvPass {
    pub env: Arc<dyn Environment>,
    pub run: RunContext,
    pub fixtures: Arc<Fixtures>,
    pub config: Arc<ParityConfig>,
    pub settings: Arc<PassSettings>,
    /// Called once per finished scenario with its record (progress display, journal).
    pub on_finished: Box<dyn Fn(&ScenarioRun) + Send + Sync>,
    /// Which of the environment's `repeats` passes this is (`--repeat N`), 0-based.
    pub repeat: u32,
    pub repeats: u32,
    counter: AtomicUsize,
}

impl EnvPass {
    pub fn new(
        env: Arc<dyn Environment>,
        run: RunContext,
        fixtures: Arc<Fixtures>,
        config: Arc<ParityConfig>,
        settings: Arc<PassSettings>,
        on_finished: Box<dyn Fn(&ScenarioRun) + Send + Sync>,
    ) -> EnvPass {
        EnvPass {
            env,
            run,
            fixtures,
            config,
            settings,
            on_finished,
            repeat: 0,
            repeats: 1,
            counter: AtomicUsize::new(0),
        }
    }

    /// This pass as repetition `repeat` of `repeats` (records carry it, file names get `-r<k>`).
    pub fn with_repeat(mut self, repeat: u32, repeats: u32) -> EnvPass {
        self.repeat = repeat;
        self.repeats = repeats.max(1);
        self
    }

    /// The id of `scenario` of `feature`, its path relative to the project root.
    pub fn scenario_id(&self, feature: &gherkin::Feature, scenario: &gherkin::Scenario) -> ScenarioId {
        ScenarioId::new(
            &self.settings.project_dir,
            feature.path.as_deref(),
            scenario.position.line,
        )
    }
}

/// Why a step did not pass.
#[derive(Debug, Clone)]
pub enum StepFailure {
    /// An expectation was not met, or the step is used wrongly.
    Fail(String),
    /// The environment could not do its part.
    Infra(InfraError),
}

impl StepFailure {
    pub fn fail(message: impl Into<String>) -> StepFailure {
        StepFailure::Fail(message.into())
    }

    pub fn message(&self) -> String {
        match self {
            StepFailure::Fail(m) => m.clone(),
            StepFailure::Infra(e) => e.to_string(),
        }
    }
}

impl From<InfraError> for StepFailure {
    fn from(e: InfraError) -> Self {
        StepFailure::Infra(e)
    }
}

/// The instant of the last stimulus.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at_ns: u64,
    pub at: tokio::time::Instant,
    /// Tape length of each bus at the mark.
    pub tape_index: BTreeMap<String, usize>,
    /// Log length of each container (`pod/container`) at the mark.
    pub log_index: BTreeMap<String, usize>,
}

/// A deployed pod.
pub struct PodHandle {
    pub spec: crate::manifest::WorkloadSpec,
    pub instances: Vec<Instance>,
}

/// What deploying the replicas of one workload shares.
struct Replicas<'a> {
    pass: &'a EnvPass,
    spec: &'a crate::manifest::WorkloadSpec,
    buses: &'a [crate::bus::BusInfo],
    scratch: &'a Path,
    /// The workload's first bus: where readiness frames are seen.
    first_bus: Option<&'a ScenarioBus>,
    /// Tape position and time of the deploy's start.
    from: usize,
    since_ns: u64,
}

impl Replicas<'_> {
    /// The spec of replica `name` with only `containers`, under `policy`, ready when started.
    fn part(
        &self,
        name: &str,
        containers: Vec<crate::manifest::ContainerSpec>,
        policy: crate::manifest::RestartPolicy,
    ) -> crate::manifest::WorkloadSpec {
        crate::manifest::WorkloadSpec {
            name: name.to_string(),
            replicas: 1,
            init_containers: Vec::new(),
            containers,
            restart_policy: policy,
            readiness: crate::manifest::Readiness::Started,
            ..self.spec.clone()
        }
    }

    async fn start(
        &self,
        part: &crate::manifest::WorkloadSpec,
        log_dir: &Path,
    ) -> Result<Vec<Instance>, InfraError> {
        let request = DeployRequest {
            workload: part,
            buses: self.buses.to_vec(),
            log_dir,
            scratch_dir: self.scratch,
        };
        self.pass.env.deploy(&self.pass.run, request).await
    }

    /// Every replica in turn, each ready before the next starts; where an orchestrator runs whole pods,
    /// the workload as the manifest has it, in one deploy.
    async fn deploy(&self, log_root: &Path, all: &mut Vec<Instance>) -> Result<(), StepFailure> {
        if self.pass.env.orchestrates_pods() {
            return self.deploy_orchestrated(log_root, all).await;
        }
        for index in 0..self.spec.replicas.max(1) {
            self.deploy_replica(index, log_root, all).await?;
        }
        Ok(())
    }

    /// The orchestrator starts every replica (init containers, policy and probes its own); each replica's
    /// app containers are then awaited like the harness's own, and with several replicas on a heartbeat,
    /// until each has sent on the bus.
    async fn deploy_orchestrated(&self, log_root: &Path, all: &mut Vec<Instance>) -> Result<(), StepFailure> {
        let (spec, timeout) = (self.spec, self.pass.settings.ready_timeout);
        let senders_before = self.first_bus.and_then(crate::readiness::senders);
        let request = DeployRequest {
            workload: spec,
            buses: self.buses.to_vec(),
            log_dir: log_root,
            scratch_dir: self.scratch,
        };
        let first = all.len();
        all.extend(self.pass.env.deploy(&self.pass.run, request).await?);
        let tape = self
            .first_bus
            .map(|b| (b.tape().as_ref(), self.from, self.since_ns));
        for index in 0..spec.replicas.max(1) {
            let replica = spec.replica_name(index);
            let start = first + all[first..].iter().take_while(|i| i.pod != replica).count();
            let end = start + all[start..].iter().take_while(|i| i.pod == replica).count();
            let app = crate::manifest::WorkloadSpec {
                readiness: spec.readiness.clone(),
                ..self.part(&replica, spec.containers.clone(), spec.restart_policy)
            };
            crate::readiness::wait_ready(&app, &all[start..end], tape, timeout).await?;
        }
        if let (true, Some(bus), Some(before)) = (
            spec.replicas > 1 && matches!(spec.readiness, crate::manifest::Readiness::CanFrame(_)),
            self.first_bus,
            senders_before,
        ) {
            let others = before + spec.replicas as usize - 1;
            crate::readiness::wait_new_sender(bus, others, &spec.name, timeout).await?;
        }
        Ok(())
    }

    /// Replica `index`: its init containers in order (sidecars keep running), then its app containers,
    /// until ready. Every started instance goes into `all` before readiness is awaited, so a replica that
    /// never gets ready is still torn down with the scenario.
    async fn deploy_replica(
        &self,
        index: u32,
        log_root: &Path,
        all: &mut Vec<Instance>,
    ) -> Result<(), StepFailure> {
        let (spec, timeout) = (self.spec, self.pass.settings.ready_timeout);
        let replica = spec.replica_name(index);
        let log_dir = log_root.join(&replica);
        for init in &spec.init_containers {
            let one = self.part(
                &replica,
                vec![init.clone()],
                spec.restart_policy.for_init_container(init.sidecar),
            );
            let started = self.start(&one, &log_dir).await?;
            if init.sidecar {
                // A sidecar counts as started once it runs and its startup probe passed.
                let first = all.len();
                all.extend(started);
                crate::readiness::wait_ready(&one, &all[first..], None, timeout).await?;
            } else {
                for instance in started {
                    crate::readiness::wait_completed(&instance, timeout).await?;
                    instance.supervisor.shutdown(spec.termination_grace).await;
                }
            }
        }
        let app = crate::manifest::WorkloadSpec {
            readiness: spec.readiness.clone(),
            ..self.part(&replica, spec.containers.clone(), spec.restart_policy)
        };
        let senders_before = self.first_bus.and_then(crate::readiness::senders);
        let first = all.len();
        all.extend(self.start(&app, &log_dir).await?);
        let tape = self
            .first_bus
            .map(|b| (b.tape().as_ref(), self.from, self.since_ns));
        crate::readiness::wait_ready(&app, &all[first..], tape, timeout).await?;
        if let (true, Some(bus), Some(before)) = (
            spec.replicas > 1 && matches!(spec.readiness, crate::manifest::Readiness::CanFrame(_)),
            self.first_bus,
            senders_before,
        ) {
            crate::readiness::wait_new_sender(bus, before, &replica, timeout).await?;
        }
        Ok(())
    }
}

/// State of one scenario in one environment.
#[derive(Default)]
pub struct ScenarioWorld {
    pub(crate) pass: Option<Arc<EnvPass>>,
    pub(crate) id: Option<ScenarioId>,
    feature_name: String,
    name: String,
    tags: Vec<String>,
    /// All steps of the scenario including backgrounds, for reporting the ones that did not run.
    planned: Vec<gherkin::Step>,
    slug: String,
    started: Option<Instant>,
    started_ns: u64,
    started_at: String,
    scratch: PathBuf,
    pub(crate) buses: BTreeMap<String, ScenarioBus>,
    pub(crate) pods: BTreeMap<String, PodHandle>,
    pub(crate) mark: Option<Mark>,
    steps: Vec<StepRun>,
    step_started: Option<Instant>,
    pub(crate) failure: Option<StepFailure>,
    pub(crate) metrics: Vec<Metric>,
    /// Faults applied so far (their index derives each fault's seed).
    pub(crate) faults_applied: u32,
    /// Looped trace replays, stopped when the scenario ends.
    pub(crate) replays: Vec<crate::replay::Replayer>,
}

impl std::fmt::Debug for ScenarioWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScenarioWorld")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl cucumber::World for ScenarioWorld {
    type Error = std::convert::Infallible;

    async fn new() -> Result<Self, Self::Error> {
        Ok(ScenarioWorld::default())
    }
}

impl ScenarioWorld {
    /// Binds the World to its environment pass and scenario (the `before` hook).
    pub fn begin(
        &mut self,
        pass: Arc<EnvPass>,
        feature: &gherkin::Feature,
        rule: Option<&gherkin::Rule>,
        scenario: &gherkin::Scenario,
    ) {
        let n = pass.counter.fetch_add(1, Ordering::SeqCst);
        let id = pass.scenario_id(feature, scenario);
        self.slug = slug(&id, &scenario.name);
        if pass.repeats > 1 {
            // Repeats of a scenario must not overwrite each other's traces and logs.
            self.slug.push_str(&format!("-r{}", pass.repeat));
        }
        self.scratch = pass
            .run
            .state_dir
            .join(format!("{}-s{n}", env_dir(pass.env.name())));
        self.planned = feature
            .background
            .iter()
            .flat_map(|b| b.steps.iter())
            .chain(
                rule.iter()
                    .flat_map(|r| r.background.iter().flat_map(|b| b.steps.iter())),
            )
            .chain(scenario.steps.iter())
            .cloned()
            .collect();
        self.tags = crate::features::all_tags(feature, rule, scenario);
        self.feature_name = feature.name.clone();
        self.name = scenario.name.clone();
        self.id = Some(id);
        self.started = Some(Instant::now());
        self.started_ns = now_ns();
        self.started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.pass = Some(pass);
        self.set_mark();
    }

    pub fn pass(&self) -> Result<&Arc<EnvPass>, StepFailure> {
        self.pass
            .as_ref()
            .ok_or_else(|| StepFailure::fail("scenario not bound to an environment"))
    }

    /// Records the current instant as the last stimulus.
    pub fn set_mark(&mut self) {
        let tape_index = self
            .buses
            .iter()
            .map(|(name, bus)| (name.clone(), bus.tape().len()))
            .collect();
        let log_index = self
            .pods
            .values()
            .flat_map(|p| p.instances.iter())
            .map(|i| {
                (
                    format!("{}/{}", i.pod, i.container.name),
                    i.supervisor.logs().len(),
                )
            })
            .collect();
        self.mark = Some(Mark {
            at_ns: now_ns(),
            at: tokio::time::Instant::now(),
            tape_index,
            log_index,
        });
    }

    pub fn mark(&self) -> Mark {
        self.mark.clone().unwrap_or_else(|| Mark {
            at_ns: now_ns(),
            at: tokio::time::Instant::now(),
            tape_index: BTreeMap::new(),
            log_index: BTreeMap::new(),
        })
    }

    /// The bus named `name` (or the default bus), started on first use.
    pub fn bus(&mut self, name: Option<&str>) -> Result<&ScenarioBus, StepFailure> {
        let pass = self.pass()?.clone();
        let name = match name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match self.buses.keys().next() {
                Some(only) if self.buses.len() == 1 => only.clone(),
                _ => pass.config.default_bus.clone(),
            },
        };
        if !self.buses.contains_key(&name) {
            // A bench adapter or bridge wired to the environment's bus, else a hub of this scenario.
            let bus = match pass.env.bench_endpoint(&name) {
                Some(endpoint) => {
                    let info = crate::bus::BusInfo {
                        name: name.clone(),
                        unix_path: None,
                        tcp_addr: None,
                    };
                    ScenarioBus::attach(&name, endpoint, info)?
                }
                None => {
                    let timing = pass
                        .config
                        .buses
                        .get(&name)
                        .map(crate::config::BusTimingConfig::timing);
                    let bus = ScenarioBus::start(
                        &name,
                        &self.scratch,
                        pass.env.bus_listen_ip(),
                        timing,
                        &pass.settings.bridges,
                    )?;
                    if timing.is_some() {
                        bus.timed(timing);
                    }
                    bus
                }
            };
            self.buses.insert(name.clone(), bus);
        }
        self.buses
            .get(&name)
            .ok_or_else(|| StepFailure::fail(format!("bus `{name}` missing")))
    }

    /// Deploys pod `name` from the fixtures and waits until it is ready.
    pub async fn deploy(&mut self, name: &str) -> Result<(), StepFailure> {
        let pass = self.pass()?.clone();
        let spec = pass
            .fixtures
            .workload(name)
            .map_err(|e| StepFailure::Infra(InfraError::Manifest(e.to_string())))?
            .clone();
        self.deploy_spec(spec).await
    }

    /// Deploys an already-read pod and waits until it is ready.
    pub async fn deploy_spec(&mut self, spec: crate::manifest::WorkloadSpec) -> Result<(), StepFailure> {
        let pass = self.pass()?.clone();
        if self.pods.contains_key(&spec.name) {
            return Err(StepFailure::fail(format!(
                "workload `{}` is already deployed in this scenario",
                spec.name
            )));
        }
        let mut buses = Vec::new();
        for bus in &spec.buses {
            buses.push(self.bus(Some(bus))?.info());
        }
        let first_bus = spec.buses.first().cloned().unwrap_or_default();
        let (from, since_ns) = (
            self.buses.get(&first_bus).map(|b| b.tape().len()).unwrap_or(0),
            now_ns(),
        );
        let deploy_started = Instant::now();
        let log_root = pass
            .settings
            .report_dir
            .join("logs")
            .join(env_dir(pass.env.name()))
            .join(&self.slug);
        let mut all = Vec::new();
        let deployed = Replicas {
            pass: &pass,
            spec: &spec,
            buses: &buses,
            scratch: &self.scratch,
            first_bus: self.buses.get(&first_bus),
            from,
            since_ns,
        }
        .deploy(&log_root, &mut all)
        .await;
        self.pods.insert(
            spec.name.clone(),
            PodHandle {
                spec: spec.clone(),
                instances: all,
            },
        );
        deployed?;
        // Deploy to ready: process or container start, image build on first use, readiness.
        self.metrics.push(Metric {
            name: format!("ready {}", spec.name),
            value: ms(deploy_started.elapsed()),
            unit: "ms".into(),
            samples: Vec::new(),
        });
        // Where the workload's frames travel a network (boards), its start-up burst may still be in flight
        // when the readiness frame arrives: wait for the bus to go quiet before the scenario goes on.
        if let (Some(quiet), Some(bus)) = (pass.env.ready_quiet(), self.buses.get(&first_bus)) {
            let deadline = tokio::time::Instant::now() + quiet * 10;
            loop {
                let len = bus.tape().len();
                let window = (tokio::time::Instant::now() + quiet).min(deadline);
                let grew = bus
                    .tape()
                    .wait(len, window, |f| (!f.is_empty()).then_some(()))
                    .await;
                if grew.is_none() || tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The pod named `name`; the name may also be `pod/container` or a container name.
    pub fn pod(&self, name: &str) -> Result<&PodHandle, StepFailure> {
        let pod_name = name.split('/').next().unwrap_or(name);
        self.pods
            .get(pod_name)
            .or_else(|| {
                self.pods.values().find(|p| {
                    p.instances
                        .iter()
                        .any(|i| i.container.name == name || i.pod == pod_name)
                })
            })
            .ok_or_else(|| {
                StepFailure::fail(format!(
                    "workload `{name}` is not deployed in this scenario (deployed: {})",
                    self.pods.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })
    }

    pub(crate) fn begin_step(&mut self, step: &gherkin::Step) {
        if step.ty == gherkin::StepType::When {
            self.set_mark();
        }
        self.step_started = Some(Instant::now());
    }

    /// Records a finished step; returns the failure to raise, if any.
    pub(crate) fn end_step(
        &mut self,
        step: &gherkin::Step,
        result: Result<(), StepFailure>,
    ) -> Option<StepFailure> {
        let started = self.step_started.take().unwrap_or_else(Instant::now);
        let base = self.started.unwrap_or(started);
        let status = match &result {
            Ok(()) => StepStatus::Passed,
            Err(StepFailure::Fail(_)) => StepStatus::Failed,
            Err(StepFailure::Infra(_)) => StepStatus::InfraError,
        };
        self.steps.push(StepRun {
            keyword: step.keyword.trim().to_string(),
            text: step.value.clone(),
            line: step.position.line,
            start_ms: ms(started.duration_since(base)),
            duration_ms: ms(started.elapsed()),
            status,
        });
        if step.ty == gherkin::StepType::Given && result.is_ok() {
            self.set_mark();
        }
        match result {
            Ok(()) => None,
            Err(e) => {
                self.failure = Some(e.clone());
                Some(e)
            }
        }
    }

    /// The seed of the scenario's next fault: the run's seed mixed with the scenario and the fault's place,
    /// so a fault acts the same in every environment and a `--seed` reproduces it whatever runs before.
    pub fn next_fault_seed(&mut self) -> u64 {
        let n = self.faults_applied;
        self.faults_applied += 1;
        let run_seed = self.pass.as_ref().map_or(0, |p| p.settings.seed);
        let id = self.id.as_ref().map(ToString::to_string).unwrap_or_default();
        // FNV-1a over the scenario id, mixed with the run's seed and the index by the faults' own PRNG.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        vcan::fault::splitmix64(
            run_seed ^ h.rotate_left(17) ^ u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }

    /// Where a step is, for messages.
    pub fn place(&self, line: usize) -> String {
        match &self.id {
            Some(id) => format!("{}:{line}", id.feature),
            None => format!("line {line}"),
        }
    }

    /// Tears the scenario down and produces its record. `finished` is cucumber's reason.
    pub async fn finish(&mut self, finished: &cucumber::event::ScenarioFinished) -> Option<ScenarioRun> {
        let pass = self.pass.clone()?;
        let id = self.id.clone()?;
        let (outcome, message) = self.outcome(finished);
        // Frames after the last step (teardown) are kept in the trace but not compared.
        let end_ns = now_ns();

        // Replays first (the stimulus ends with the scenario), then workloads (so their last frames are on
        // the tape), then buses.
        for replay in std::mem::take(&mut self.replays) {
            tokio::task::spawn_blocking(move || replay.stop()).await.ok();
        }
        let mut workloads = Vec::new();
        for (_, pod) in std::mem::take(&mut self.pods) {
            for instance in pod.instances {
                let state = instance.supervisor.state();
                let log_file = instance
                    .supervisor
                    .logs()
                    .path()
                    .map(|p| rel(&pass.settings.report_dir, p));
                instance.supervisor.shutdown(TEARDOWN_GRACE).await;
                workloads.push(WorkloadRun {
                    pod: instance.pod,
                    container: instance.container.name,
                    starts: state.starts,
                    restarts: state.restarts,
                    last_exit: state.last_exit.map(|e| e.to_string()),
                    log_file,
                });
            }
        }
        let buses: Vec<BusSummary> = std::mem::take(&mut self.buses)
            .into_values()
            .map(ScenarioBus::finish)
            .collect();

        let env_dir = env_dir(pass.env.name());
        let bus_runs = buses
            .iter()
            .map(|b| {
                let trace = pass
                    .settings
                    .report_dir
                    .join("traces")
                    .join(&env_dir)
                    .join(format!("{}.{}.log", self.slug, b.name));
                let written = write_candump(&trace, &b.name, &b.frames, &b.notes).is_ok();
                let asc = trace.with_extension("asc");
                let asc_written = crate::bus::write_asc(&asc, &b.name, &b.frames).is_ok();
                let observed = normalise::observed(&b.frames, end_ns);
                let mut run = bus_run(
                    b,
                    &observed,
                    written.then(|| rel(&pass.settings.report_dir, &trace)),
                    &pass.fixtures,
                    &pass.config,
                );
                run.asc_file = asc_written.then(|| rel(&pass.settings.report_dir, &asc));
                (run.signals, run.signal_ids) =
                    normalise::signal_series(&observed, &pass.fixtures, self.started_ns);
                run.timeline = observed
                    .iter()
                    .take(TIMELINE_LIMIT)
                    .map(|f| {
                        (
                            normalise::frame_key_value(&f.frame).0,
                            ms_between_ns(self.started_ns, f.timestamp_ns),
                        )
                    })
                    .collect();
                run
            })
            .collect();

        let record = ScenarioRun {
            id,
            feature_name: self.feature_name.clone(),
            name: self.name.clone(),
            tags: self.tags.clone(),
            env: pass.env.name().to_string(),
            transport: pass.env.transport(),
            outcome,
            message,
            started_at: self.started_at.clone(),
            duration_ms: self.started.map(|s| ms(s.elapsed())).unwrap_or(0.0),
            steps: std::mem::take(&mut self.steps),
            metrics: std::mem::take(&mut self.metrics),
            buses: bus_runs,
            workloads,
            repeat: pass.repeat,
        };
        let _ = std::fs::remove_dir_all(&self.scratch);
        Some(record)
    }

    fn outcome(&mut self, finished: &cucumber::event::ScenarioFinished) -> (Outcome, Option<String>) {
        use cucumber::event::{ScenarioFinished as F, StepError};
        let failed_line = self
            .steps
            .iter()
            .rev()
            .find(|s| s.status != StepStatus::Passed)
            .map(|s| s.line);
        match (finished, &self.failure) {
            (F::StepPassed, _) => (Outcome::Passed, None),
            // The environment cannot run the workload as the project provides it: not an infra-error.
            (_, Some(StepFailure::Infra(e @ InfraError::Unsupported { .. }))) => {
                (Outcome::Unsupported, Some(format!("unsupported here: {e}")))
            }
            (_, Some(StepFailure::Infra(e))) => (
                Outcome::InfraError,
                Some(format!("{}: {e}", self.place(failed_line.unwrap_or(0)))),
            ),
            (_, Some(StepFailure::Fail(m))) => (
                Outcome::Failed,
                Some(format!("{}: {m}", self.place(failed_line.unwrap_or(0)))),
            ),
            (F::StepSkipped, None) => {
                // The first planned step that did not run is the one no definition matched.
                let first = self.steps.len();
                let undefined = self.planned.get(first).cloned();
                for (i, step) in self.planned.iter().enumerate().skip(first) {
                    self.steps.push(StepRun {
                        keyword: step.keyword.trim().to_string(),
                        text: step.value.clone(),
                        line: step.position.line,
                        start_ms: 0.0,
                        duration_ms: 0.0,
                        status: if i == self.steps.len() {
                            StepStatus::Undefined
                        } else {
                            StepStatus::Skipped
                        },
                    });
                }
                let msg = match undefined {
                    Some(s) => format!(
                        "{}: undefined step: `{} {}` matches no step definition (see `agl-parity list --steps`)",
                        self.place(s.position.line),
                        s.keyword.trim(),
                        s.value
                    ),
                    None => "a step was skipped".into(),
                };
                (Outcome::Failed, Some(msg))
            }
            (F::StepFailed(_, _, StepError::AmbiguousMatch(e)), None) => {
                (Outcome::Failed, Some(format!("ambiguous step: {e}")))
            }
            (F::StepFailed(_, _, e), None) => (Outcome::Failed, Some(e.to_string())),
            (F::BeforeHookFailed(_), None) => (Outcome::InfraError, Some("scenario setup failed".into())),
        }
    }
}

impl Drop for ScenarioWorld {
    fn drop(&mut self) {
        // Supervisors kill their processes on drop; buses stop their recorders and hubs on drop.
        self.replays.clear();
        self.pods.clear();
        self.buses.clear();
        if !self.scratch.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
    }
}

fn ms_between_ns(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
}

/// Milliseconds as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rel(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).display().to_string()
}

pub use crate::record::env_dir;

/// File-name slug of a scenario: `<feature stem>-L<line>-<name>`.
pub fn slug(id: &ScenarioId, name: &str) -> String {
    let stem = Path::new(&id.feature)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut words = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            words.push(c.to_ascii_lowercase());
        } else if !words.ends_with('-') {
            words.push('-');
        }
    }
    let words: String = words.trim_matches('-').chars().take(40).collect();
    format!("{stem}-L{}-{}", id.line, words.trim_end_matches('-'))
}

fn bus_run(
    b: &BusSummary,
    observed: &[TracedFrame],
    trace_file: Option<String>,
    fixtures: &Fixtures,
    config: &ParityConfig,
) -> BusRun {
    let (sequences, counts) = normalise::sequences(observed, fixtures, config);
    let drops = b
        .stats
        .as_ref()
        .map(|s| {
            s.nodes
                .iter()
                .filter(|n| n.dropped > 0)
                .map(|n| NodeDrops {
                    node: n.name.clone(),
                    dropped: n.dropped,
                })
                .collect()
        })
        .unwrap_or_default();
    BusRun {
        name: b.name.clone(),
        frames: b.frames.len() as u64,
        trace_file,
        asc_file: None,
        drops,
        sequences,
        counts,
        recorder_failure: b.recorder_failure.clone(),
        timeline: Vec::new(),
        faults: b.faults.clone(),
        timing: b.timing.clone(),
        signals: BTreeMap::new(),
        signal_ids: BTreeMap::new(),
        bridges: b.bridges.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_dirs() {
        let id = ScenarioId {
            feature: "scenarios/hvac.feature".into(),
            line: 12,
        };
        assert_eq!(slug(&id, "Fan level 3 -> PWM 40%"), "hvac-L12-fan-level-3-pwm-40");
        assert_eq!(env_dir("board:rpi4"), "board-rpi4");
    }
}
