//! `agegate mdb-sim`: the daemon as `run` builds it (pipeline, models, policy, session,
//! liveness, the AVD's thread), but on simulated scenes, a reporting gate and an in-memory
//! MDB bus whose other end a simulated VMC drives from its own thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use agegate::actuate::{Gate, GpioBackend, GpioSettings, PinSpec};
use agegate::config::Board;
use agegate::daemon::{
    Daemon, DaemonSettings, Event, LiveCounters, ModelFiles, MonotonicClock, NoWatchdog, Parts,
    RecordingClock, StopSignal,
};
use agegate::liveness::LivenessMode;
use agegate::mdb::transport::memory;
use agegate::mdb::{BusClock, DeviceSettings, DravpAnswer, MdbDevice};
use agegate::pipeline::Pipeline;
use agegate::session::Trigger;
use agegate::tools::mdb_sim::{parse_spec, run_sessions, SceneKind, SceneSource, SimSettings, Vmc};

use super::{MdbSimArgs, Outcome};

/// The bundled scenes (tests/frames; models/scripts/make_frames.py lays out demo.mjpeg:
/// 4 empty frames, Grace Hopper 10, empty 9, the astronaut 10, empty 4).
const BUNDLED: [&str; 3] = [
    "adult=../tests/frames/demo.mjpeg:4-13,23-32",
    "empty=../tests/frames/demo.mjpeg:0-3,14-22,33-36",
    "attack=../tests/frames/attacks.mjpeg",
];

/// The longest a session waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

pub(super) fn simulate(args: MdbSimArgs) -> Result<Outcome> {
    let board = Board::load_for_simulation(&args.board)?;
    let Some(mdb) = board.mdb.clone() else {
        bail!(
            "board file {}: key `mdb`: missing; mdb-sim drives the board's [mdb] device",
            args.board.display()
        );
    };
    if board.daemon.session.trigger != Trigger::Request {
        bail!(
            "board file {}: key `session.trigger`: a vending machine asks: give \"request\"",
            args.board.display()
        );
    }
    let base = args.board.parent().unwrap_or(std::path::Path::new("."));
    let liveness = board.daemon.session.liveness.mode != LivenessMode::Off;
    let specs: Vec<String> = if args.scenes.is_empty() {
        BUNDLED
            .iter()
            // Without liveness a print of an adult is an adult: no attack scene.
            .filter(|s| liveness || !s.starts_with("attack="))
            .map(|s| {
                let (name, path) = s.split_once('=').unwrap_or((s, ""));
                format!("{name}={}", base.join(path).display())
            })
            .collect()
    } else {
        args.scenes.clone()
    };
    let scenes = specs
        .iter()
        .map(|s| parse_spec(s, board.max_pixels()))
        .collect::<Result<Vec<_>>>()?;
    let kinds: Vec<_> = scenes.iter().map(|s| s.kind).collect();
    if !liveness && kinds.contains(&SceneKind::Attack) {
        bail!(
            "--scene attack=...: board file {} has [liveness] mode = \"off\", so a print of \
             an adult is judged as the adult; give attack scenes to a board with liveness on",
            args.board.display()
        );
    }
    for scene in &scenes {
        eprintln!("mdb-sim: scene {} = {}", scene.kind.name(), scene.source);
    }
    let current = Arc::new(AtomicUsize::new(0));
    let source = SceneSource::new(Arc::new(scenes), current.clone(), 15);

    // Only reported: the simulator has no relay.
    let gate = Gate::from_settings(&GpioSettings {
        backend: GpioBackend::Log,
        relay: PinSpec::Name("relay".into()),
        relay_active_low: false,
        relay_pulse_ms: 1_000,
        leds: [None, None, None],
        leds_active_low: false,
    })?;
    let pipeline = Pipeline::from_board(&board)?;
    let pins: Vec<_> = board
        .model_files()
        .into_iter()
        .map(|f| (f.path, f.pinned))
        .collect();
    let models =
        ModelFiles::snapshot(&pins, board.daemon.model_hash_ms).map_err(anyhow::Error::msg)?;
    let stop = StopSignal::default();
    let parts = Parts {
        source: Box::new(source),
        estimator: Box::new(pipeline),
        link: None,
        gate,
        models: Box::new(models),
        watchdog: Box::new(NoWatchdog),
        clock: Box::new(RecordingClock::default()),
        wall: Box::new(MonotonicClock::default()),
        stop: stop.clone(),
    };
    let (event_tx, events) = std::sync::mpsc::channel::<Event>();
    let sink = Box::new(move |event: Event| -> std::io::Result<()> {
        // The simulator may have finished; its lines are all that is printed.
        let _ = event_tx.send(event);
        Ok(())
    });
    let settings: DaemonSettings = board.daemon.clone();
    let mut daemon = Daemon::new(parts, board.policy, settings, sink);
    let clock = BusClock::default();
    let (avd_end, vmc_end) = memory::pair(clock.clone());
    let device_settings = DeviceSettings {
        avd: mdb.avd,
        sched_fifo_priority: mdb.sched_fifo_priority,
    };
    let (device, port) = MdbDevice::start(device_settings, Box::new(avd_end), clock)
        .context("starting the MDB thread")?;
    let counters = Arc::new(LiveCounters::default());
    let _ = counters.mdb.set(device.health());
    daemon.share_counters(counters);
    daemon.serve_vmc(port);

    let load_stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..args.load_threads)
        .map(|_| {
            let stop = load_stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();

    let sim = SimSettings {
        sessions: args.sessions,
        abort_percent: args.abort_percent.min(100),
        answer_within: ANSWER_WITHIN,
        dravp_immediate: mdb.avd.dravp_answer == DravpAnswer::Immediate,
    };
    let seed = args.seed;
    let vmc_thread = std::thread::Builder::new()
        .name("vmc-sim".into())
        .spawn(move || {
            let mut vmc = Vmc::new(vmc_end, seed);
            let summary = run_sessions(&mut vmc, &kinds, &current, &events, sim, &mut |line| {
                println!("{line}");
            });
            stop.raise();
            (summary, vmc.figures)
        })?;
    let exit = daemon.run();
    let stats = daemon.stats();
    drop(daemon);
    let health = *device
        .health()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    drop(device);
    load_stop.store(true, Ordering::Relaxed);
    for thread in load {
        let _ = thread.join();
    }
    let (summary, figures) = vmc_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the simulated VMC panicked"))?;
    println!(
        "{}",
        serde_json::json!({
            "summary": summary,
            "daemon": {"exit": format!("{exit:?}"), "stats": stats},
            "response_ms": figures.reply_times(),
            "bus": {
                "commands": figures.commands,
                "silent": figures.silent,
                "naks": figures.naks,
                "rets": figures.rets,
                "garbled": figures.garbled,
                "noise": figures.noise,
            },
            "device": health,
            "load_threads": args.load_threads,
        })
    );
    if !summary.violations.is_empty() {
        bail!(
            "mdb-sim: {} violation(s), the first: {}",
            summary.violations.len(),
            summary.violations[0]
        );
    }
    Ok(Outcome::Success)
}
