//! `agegate run`: the device. Builds the parts a board describes (gate first, so the
//! relay is driven inactive before anything else can fail), hands them to the daemon and
//! reports how the run ended.

use anyhow::{Context, Result};

use agegate::actuate::Gate;
use agegate::capture::{self, SourceSettings};
use agegate::config::Board;
use agegate::daemon::{
    Clock, Daemon, Event, Exit, LiveCounters, ModelFiles, MonotonicClock, Parts, PolicyMailbox,
    RecordingClock, StopSignal, SystemdWatchdog,
};
use agegate::mdb::{self, BusClock, DeviceSettings, MdbDevice};
use agegate::pipeline::Pipeline;
use agegate::serial::link::{HostLink, SerialLink};
use agegate::serial::{FaultCode, Message, SerialSettings};
use agegate::telemetry::{policy_summary, Telemetry, UnitInfo};

use super::{print_err, Outcome, RunArgs};

pub(super) fn daemon(args: RunArgs) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let mut board = Board::load(&args.board)?;
    if args.looped {
        board
            .loop_recording()
            .map_err(|e| anyhow::anyhow!("--loop: {e}"))?;
    }
    let key_missing = |key: &str| {
        anyhow::anyhow!(
            "board file {}: key `{key}`: missing; `agegate run` needs [capture] and [gpio]",
            args.board.display()
        )
    };
    let capture_settings = board
        .capture
        .clone()
        .ok_or_else(|| key_missing("capture"))?;
    let gpio = board.gpio.clone().ok_or_else(|| key_missing("gpio"))?;
    // The relay first: it is driven inactive before anything else can fail.
    let gate = Gate::from_settings(&gpio)?;
    let stop = StopSignal::install().context("installing the stop-signal handler")?;
    // The host line before the models, so that a model refused at start (corrupt, wrong
    // contract, not the pinned file) is a FAULT the host hears, not only an exit status.
    let mut link: Option<Box<dyn HostLink>> = match &board.serial {
        SerialSettings::None => None,
        SerialSettings::Port { path, baud } => {
            Some(Box::new(SerialLink::open(path.clone(), *baud)?))
        }
    };
    let load_started = std::time::Instant::now();
    let loaded = Pipeline::from_board(&board)
        .map_err(anyhow::Error::new)
        .and_then(|pipeline| {
            let pins: Vec<_> = board
                .model_files()
                .into_iter()
                .map(|f| (f.path, f.pinned))
                .collect();
            let models = ModelFiles::snapshot(&pins, board.daemon.model_hash_ms)
                .map_err(anyhow::Error::msg)?;
            Ok((pipeline, models))
        });
    let (pipeline, models) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tell_host_model_refused(link.as_deref_mut(), &e);
            return Err(e);
        }
    };
    tracing::info!(
        ms = load_started.elapsed().as_millis() as u64,
        "models loaded"
    );
    let source = capture::open(&capture_settings)?;
    // A recording replays on its own timestamps (deterministic, as fast as it runs); the
    // serial line and heartbeats keep wall time whatever the source.
    let wall = MonotonicClock::default();
    let clock: Box<dyn Clock> = match capture_settings.source {
        SourceSettings::Camera { .. } => Box::new(wall),
        _ => Box::new(RecordingClock::default()),
    };
    let parts = Parts {
        source,
        estimator: Box::new(pipeline),
        link,
        gate,
        models: Box::new(models),
        watchdog: Box::new(SystemdWatchdog::from_env()),
        clock,
        wall: Box::new(wall),
        stop,
    };
    let counters = std::sync::Arc::new(LiveCounters::default());
    let policies = std::sync::Arc::new(PolicyMailbox::default());
    let telemetry = match &board.telemetry {
        None => None,
        Some(settings) => Some(std::rc::Rc::new(
            Telemetry::start(
                settings.clone(),
                unit_info(&board),
                board.policy,
                counters.clone(),
                policies.clone(),
            )
            .map_err(anyhow::Error::msg)?,
        )),
    };
    let observer = telemetry.clone();
    let quiet = args.quiet;
    let first_decision = std::rc::Rc::new(std::cell::Cell::new(None));
    let first = std::rc::Rc::clone(&first_decision);
    let events = Box::new(move |event: Event| -> std::io::Result<()> {
        use std::io::Write;
        if matches!(event, Event::Decision { .. }) && first.get().is_none() {
            first.set(Some(started.elapsed().as_secs_f64() * 1e3));
        }
        if let Some(telemetry) = &observer {
            telemetry.observe(&event);
        }
        if quiet {
            return Ok(());
        }
        let line = serde_json::to_string(&event).map_err(std::io::Error::other)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    });
    let mut daemon = Daemon::new(parts, board.policy, board.daemon.clone(), events);
    // The vending machine's bus: its own thread, started once the models are in.
    let mdb = match &board.mdb {
        None => None,
        Some(settings) => {
            let clock = BusClock::default();
            let transport = mdb::open_transport(&settings.transport, clock.clone())?;
            let device = DeviceSettings {
                avd: settings.avd,
                sched_fifo_priority: settings.sched_fifo_priority,
            };
            let (device, port) =
                MdbDevice::start(device, transport, clock).context("starting the MDB thread")?;
            let _ = counters.mdb.set(device.health());
            daemon.serve_vmc(port);
            Some(device)
        }
    };
    daemon.share_counters(counters);
    if board.telemetry.as_ref().is_some_and(|t| t.remote_policy) {
        daemon.take_policies_from(policies);
    }
    if let Some(limit) = args.max_frames {
        daemon.set_frame_limit(limit);
    }
    let exit = daemon.run();
    // The sink holds the other handle: the daemon goes first.
    let stats = daemon.stats();
    drop(daemon);
    drop(mdb);
    if let Some(telemetry) = telemetry.and_then(|t| std::rc::Rc::try_unwrap(t).ok()) {
        telemetry.finish(TELEMETRY_PATIENCE);
    }
    let fmt_ms = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.0} ms"));
    print_err(&format!(
        "agegate run: {exit:?}; {stats:?}; first decision {} after start (wall); peak RSS {}",
        fmt_ms(first_decision.get()),
        agegate::tools::bench::rss_peak_mb().map_or("n/a".into(), |mb| format!("{mb:.1} MB")),
    ));
    Ok(match exit {
        Exit::RecordingEnded | Exit::Stopped | Exit::Aborted => Outcome::Success,
        Exit::Fault { .. } => Outcome::Fault,
    })
}

/// How long a stopping daemon waits for the broker to take what is queued.
const TELEMETRY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// What telemetry's `status` says of the unit: board, model hashes, policy.
fn unit_info(board: &Board) -> UnitInfo {
    UnitInfo {
        board: board.name.clone(),
        detector_sha256: board.detector_sha256.map(|h| h.to_string()),
        age_sha256: board.age_sha256.map(|h| h.to_string()),
        policy: policy_summary(&board.policy),
    }
}

/// FAULT model to the host, best effort: the daemon is exiting either way, with the gate
/// inactive since before the models were read.
fn tell_host_model_refused(link: Option<&mut (dyn HostLink + 'static)>, error: &anyhow::Error) {
    let Some(link) = link else { return };
    let detail = if error
        .downcast_ref::<agegate::engine::ModelError>()
        .is_some_and(|e| matches!(e, agegate::engine::ModelError::Pinned { .. }))
    {
        "model pin wrong"
    } else {
        "model refused"
    };
    let fault = Message::fault(FaultCode::MODEL, detail);
    match fault.to_bytes() {
        Ok(bytes) => {
            if let Err(e) = link.write_frame(&bytes) {
                tracing::warn!("cannot tell the host the model was refused: {e}");
            }
        }
        Err(e) => tracing::error!("cannot encode {fault:?}: {e}"),
    }
}
