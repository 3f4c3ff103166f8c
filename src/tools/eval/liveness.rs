//! `agegate eval --liveness`: how often attacks pass (APCER) and real faces are referred
//! (BPCER), per attack kind and per cue, through the whole pipeline (detector, keypoints,
//! liveness models, the window's cues).
//!
//! Four parts, each saying what it stands on:
//! - **attacks** ([`super::attacks`]): labelled photos shown as prints and on screens,
//!   moved or held still, as frame sequences. Simulated.
//! - **bona fide, passive**: the labelled photos themselves, as they are and degraded
//!   (`--degrade`): each photo is one frame of a real face for the passive models.
//! - **bona fide, motion** (tracks): a real head cannot be made from a photo (any motion
//!   of a photo is itself planar), so the motion cues are measured on keypoint tracks: a
//!   3-D face template (`models/face_template_3d.json`, from the face mesh's depth on
//!   UTKFace) turned and moved as a person at a kiosk does, projected, with the keypoint
//!   jitter the detector shows on real photos (measured here, on the same photos), against
//!   the same template flattened and moved the same way. Simulated.
//! - **recordings** (`--recordings DIR`): an operator's own recordings, each labelled
//!   `bona_fide` or `attack` in `DIR/manifest.csv` (`path,label[,fps]`: an MJPEG file or
//!   a folder of frames). Real, when there are any.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use super::attacks::{Attack, AttackKind};
use super::tracks::{photo_stats, simulate_tracks};
use crate::capture::files::{ImageDir, MjpegFile};
use crate::capture::FrameSource;
use crate::detect::main_face;
use crate::engine::ModelError;
use crate::liveness::{
    CueFlags, FrameEvidence, LivenessSettings, LivenessWindow, Measures, PointTracker, Verdict,
};
use crate::photo::load_rgb_within;
use crate::pipeline::Pipeline;
use crate::tools::degrade::{seed_of, Degradation};
use crate::tools::manifest::Entry;

/// The 3-D template of the six keypoints (`models/face_template_3d.json`).
pub(super) const TEMPLATE_JSON: &str = include_str!("../../../models/face_template_3d.json");

/// How the liveness evaluation runs.
#[derive(Debug, Clone)]
pub struct LivenessEvalOptions {
    /// Photos of the manifest used, in the evaluation's seeded order (all by default).
    pub limit: Option<usize>,
    /// Attack sequences per kind (one photo each, the manifest's first ones).
    pub sequences: usize,
    /// Frames per sequence and their rate.
    pub frames: usize,
    pub fps: f64,
    /// Degradations for the passive bona-fide part.
    pub degrade: Vec<Degradation>,
    /// Simulated tracks per kind (moving head, still person, flat template).
    pub tracks: usize,
    /// Photos the detector's keypoint jitter is measured on.
    pub jitter_photos: usize,
    pub recordings: Option<PathBuf>,
}

/// Shares of windows, with counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rates {
    pub n: usize,
    /// Windows the detector found no face in (an attack not seen: REFER no_face).
    pub no_face: usize,
    /// Attacks: the share judged bona fide (APCER). Bona fide: the share judged a spoof
    /// (BPCER).
    pub error_rate: Option<f64>,
    /// Each cue's own share of windows it flags as a spoof, and the share with a blink.
    pub flagged: BTreeMap<&'static str, f64>,
    /// Medians of what the windows measured.
    pub median: BTreeMap<&'static str, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackReport {
    /// The detector's keypoint jitter (standard deviation, inter-ocular distances) per
    /// keypoint, measured on the labelled photos under sub-pixel shifts and sensor noise.
    pub jitter_iod: [f64; 6],
    /// The same for the face mesh's tracked landmarks (`liveness::MESH_TRACKED` order).
    pub mesh_jitter_iod: Vec<f64>,
    /// The followed image points' error per frame step, the same photos and views.
    pub tracked_jitter_iod: Vec<f64>,
    /// The mesh's 3-D template of those landmarks, measured on the photos.
    pub mesh_template: Vec<[f64; 3]>,
    pub jitter_photos: usize,
    /// A person at a kiosk: head turns of a few degrees (BPCER of the motion cues).
    pub head: Rates,
    /// A person standing very still (under a degree): the share referred is the cost.
    pub still_person: Rates,
    /// The template flattened (a photo) and moved the same way (APCER of the motion cues).
    pub flat: Rates,
}

#[derive(Debug, Clone, Serialize)]
pub struct LivenessReport {
    pub mode: &'static str,
    pub thresholds: LivenessSettings,
    pub frames_per_sequence: usize,
    pub fps: f64,
    /// Per attack kind (simulated).
    pub attacks: BTreeMap<&'static str, Rates>,
    /// All attack kinds together.
    pub attacks_all: Rates,
    /// Bona fide photos, passive cues, per degradation (`clean` first).
    pub bona_fide_passive: BTreeMap<String, Rates>,
    /// Simulated keypoint tracks, motion cues only.
    pub tracks: TrackReport,
    /// The operator's recordings, by label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recordings: Option<BTreeMap<String, Rates>>,
    pub simulated: &'static str,
    /// Every window: its group (attack kind, `bona_fide/<degradation>`, `track/<kind>`,
    /// `recording/<label>`) and its measures (`None`: no face). Written as the per-window
    /// CSV, not in the JSON.
    #[serde(skip)]
    pub windows: Vec<(String, Option<Measures>)>,
}

/// The per-window CSV: one row per window, every measure, and the verdict.
pub fn write_windows_csv(
    report: &LivenessReport,
    settings: &LivenessSettings,
    path: &Path,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "group,frames,span_ms,real,live,motion,planar_residual,mesh,planar_residual_keypoints,\
         motion_tracked,planar_residual_tracked,blink,verdict"
    )?;
    let f = |v: Option<f32>| v.map_or(String::new(), |v| format!("{v:.5}"));
    for (group, m) in &report.windows {
        match m {
            None => writeln!(out, "{group},0,0,,,,,,,,,,no_face")?,
            Some(m) => {
                let verdict = match settings.judge(m) {
                    Verdict::Spoof(cue) => cue.name(),
                    Verdict::BonaFide => "bona_fide",
                    Verdict::NotYet => "not_yet",
                    Verdict::Unchecked => "unchecked",
                };
                writeln!(
                    out,
                    "{group},{},{},{},{},{},{},{},{},{},{},{},{verdict}",
                    m.frames,
                    m.span_ms,
                    f(m.real),
                    f(m.live),
                    f(m.motion),
                    f(m.planar_residual),
                    m.mesh,
                    f(m.planar_residual_keypoints),
                    f(m.motion_tracked),
                    f(m.planar_residual_tracked),
                    m.blink.map_or(String::new(), |b| b.to_string()),
                )?;
            }
        }
    }
    out.flush()
}

/// One window's outcome: its measures, or no face.
#[derive(Debug, Clone, Copy)]
pub(super) enum Window {
    NoFace,
    Judged(Measures),
}

impl Window {
    /// A window of frames: judged, or no face when fewer than three frames had one.
    fn of(window: &LivenessWindow, settings: &LivenessSettings) -> Self {
        if window.len() < 3 {
            Window::NoFace
        } else {
            Window::Judged(window.measures(settings.blink_ratio))
        }
    }

    fn measures(&self) -> Option<Measures> {
        match self {
            Window::NoFace => None,
            Window::Judged(m) => Some(*m),
        }
    }
}

/// Keeps `windows` for the CSV under `group`.
fn keep(all: &mut Vec<(String, Option<Measures>)>, group: &str, windows: &[Window]) {
    all.extend(windows.iter().map(|w| (group.to_string(), w.measures())));
}

/// Tallies windows of one kind.
pub(super) fn rates(windows: &[Window], settings: &LivenessSettings, attack: bool) -> Rates {
    let judged: Vec<&Measures> = windows
        .iter()
        .filter_map(|w| match w {
            Window::Judged(m) => Some(m),
            Window::NoFace => None,
        })
        .collect();
    let n = windows.len();
    let mut out = Rates {
        n,
        no_face: n - judged.len(),
        ..Rates::default()
    };
    if n == 0 {
        return out;
    }
    let flags: Vec<CueFlags> = judged.iter().map(|m| settings.flags(m)).collect();
    let spoof = |m: &Measures| matches!(settings.judge(m), Verdict::Spoof(_));
    let errors = if attack {
        // An attack passes only when a face was found and judged bona fide.
        judged.iter().filter(|m| !spoof(m)).count()
    } else {
        // A real face the detector missed is not a liveness error (the age pipeline's
        // own eval counts it): the share is of the faces judged.
        judged.iter().filter(|m| spoof(m)).count()
    };
    let of = if attack { n } else { judged.len() };
    out.error_rate = (of > 0).then(|| errors as f64 / of as f64);
    if !judged.is_empty() {
        let share = |f: &dyn Fn(&CueFlags) -> bool| {
            flags.iter().filter(|c| f(c)).count() as f64 / judged.len() as f64
        };
        let any_real = judged.iter().any(|m| m.real.is_some());
        let any_motion = judged.iter().any(|m| m.motion.is_some());
        let any_blink = judged.iter().any(|m| m.blink.is_some());
        if any_real {
            out.flagged.insert("antispoof", share(&|c| c.antispoof));
            out.flagged.insert("live_model", share(&|c| c.live_model));
        }
        if any_motion {
            out.flagged.insert("still", share(&|c| c.still));
            out.flagged.insert("planar", share(&|c| c.planar));
            // The two planarity cues apart: the mesh landmarks' (or keypoints') and the
            // followed image points'.
            let below = |v: Option<f32>, t: f32| v.is_some_and(|v| v.is_nan() || v < t);
            let apart = |f: &dyn Fn(&Measures) -> bool| {
                judged.iter().filter(|m| f(m)).count() as f64 / judged.len() as f64
            };
            out.flagged.insert(
                "planar_landmarks",
                apart(&|m| below(m.planar_residual, settings.max_planar_residual)),
            );
            out.flagged.insert(
                "planar_tracked",
                apart(&|m| below(m.planar_residual_tracked, settings.max_tracked_residual)),
            );
            // The windows the planar cue flags for want of followed points.
            out.flagged
                .insert("tracked_missing", apart(&Measures::untracked));
        }
        if any_blink {
            out.flagged.insert("blink_seen", share(&|c| c.blink));
        }
        let mut median = |key: &'static str, get: &dyn Fn(&Measures) -> Option<f32>| {
            let mut v: Vec<f64> = judged
                .iter()
                .filter_map(|m| get(m))
                .map(f64::from)
                .collect();
            if !v.is_empty() {
                v.sort_by(f64::total_cmp);
                out.median.insert(key, v[v.len() / 2]);
            }
        };
        median("real", &|m| m.real);
        median("live", &|m| m.live);
        median("motion", &|m| m.motion);
        median("planar_residual", &|m| m.planar_residual);
        median("planar_residual_keypoints", &|m| {
            m.planar_residual_keypoints
        });
        median("motion_tracked", &|m| m.motion_tracked);
        median("planar_residual_tracked", &|m| m.planar_residual_tracked);
    }
    out
}

/// The evidence of one frame's main face, `None` without a face.
fn frame_evidence(
    pipeline: &Pipeline,
    frame: &RgbImage,
) -> Result<Option<FrameEvidence>, ModelError> {
    let faces = pipeline.detector.detect(frame)?;
    let Some(i) = main_face(&faces, frame.width(), frame.height()) else {
        return Ok(None);
    };
    Ok(Some(pipeline.evidence(frame, &faces[i])?.unwrap_or(
        FrameEvidence {
            keypoints: faces[i].keypoints,
            ..FrameEvidence::default()
        },
    )))
}

/// Runs frames through the pipeline into one window; fewer than three faces is no face.
fn run_window(
    pipeline: &Pipeline,
    settings: &LivenessSettings,
    mut frames: impl FnMut(usize) -> Option<(u64, RgbImage)>,
) -> Result<Window, ModelError> {
    let mut window = LivenessWindow::new();
    let mut tracker = PointTracker::default();
    let mut k = 0;
    while let Some((t_ms, frame)) = frames(k) {
        if let Some(mut e) = frame_evidence(pipeline, &frame)? {
            e.follow(&mut tracker, &frame);
            window.observe(t_ms, e);
        }
        k += 1;
    }
    Ok(Window::of(&window, settings))
}

/// Runs the whole liveness evaluation. `progress` is called after each window.
pub fn evaluate(
    pipeline: &Pipeline,
    entries: &[Entry],
    options: &LivenessEvalOptions,
    mut progress: impl FnMut(&str),
) -> Result<LivenessReport, String> {
    let settings = pipeline.session.liveness;
    if pipeline.liveness.is_none() {
        return Err(
            "the board's `[liveness] mode` is off: give a board with liveness on \
                    (e.g. boards/rpi5.toml) to evaluate it"
                .into(),
        );
    }
    let fail = |e: ModelError| e.to_string();
    // The manifest may be sorted (UTKFace val is, by age): a seeded order, the same in
    // every run, takes a fair sample of it.
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by_key(|e| seed_of(&e.rel_path));
    order.truncate(options.limit.unwrap_or(usize::MAX));
    let load = |e: &Entry| load_rgb_within(&e.path, pipeline.max_pixels).ok();
    let wanted = options.sequences.max(options.jitter_photos);
    let photos: Vec<(&Entry, RgbImage)> = order
        .iter()
        .filter_map(|e| load(e).map(|p| (*e, p)))
        .take(wanted)
        .collect();
    if photos.is_empty() {
        return Err("no photo of the manifest could be read".into());
    }
    let mut kept = Vec::new();
    // Attacks.
    let mut attacks = BTreeMap::new();
    let mut all = Vec::new();
    for kind in AttackKind::ALL {
        let mut windows = Vec::new();
        for (entry, photo) in photos.iter().take(options.sequences) {
            let attack = Attack::new(kind, photo, seed_of(&entry.rel_path));
            let w = run_window(pipeline, &settings, |k| {
                (k < options.frames).then(|| {
                    let t = k as f64 / options.fps;
                    ((t * 1000.0).round() as u64, attack.frame(t, k as u64))
                })
            })
            .map_err(fail)?;
            windows.push(w);
            progress(kind.name());
        }
        keep(&mut kept, kind.name(), &windows);
        attacks.insert(kind.name(), rates(&windows, &settings, true));
        all.extend(windows);
    }
    let attacks_all = rates(&all, &settings, true);
    // Bona fide photos, passive cues (each photo one frame): every photo of the manifest.
    let passive = LivenessSettings {
        mode: crate::liveness::LivenessMode::Passive,
        ..settings
    };
    let mut bona_fide_passive = BTreeMap::new();
    let kinds: Vec<Option<&Degradation>> = std::iter::once(None)
        .chain(options.degrade.iter().map(Some))
        .collect();
    for d in kinds {
        let mut windows = Vec::new();
        for entry in &order {
            let Some(photo) = load(entry) else {
                continue;
            };
            let photo = match d {
                Some(d) => d.apply(&photo, seed_of(&entry.rel_path)),
                None => photo,
            };
            let w = match frame_evidence(pipeline, &photo).map_err(fail)? {
                None => Window::NoFace,
                Some(e) => Window::Judged(Measures::of_frame(&e)),
            };
            windows.push(w);
            progress("bona fide");
        }
        let name = d.map_or("clean".to_string(), Degradation::name);
        keep(&mut kept, &format!("bona_fide/{name}"), &windows);
        bona_fide_passive.insert(name, rates(&windows, &passive, false));
    }
    let stats = photo_stats(pipeline, &photos[..photos.len().min(options.jitter_photos)])?;
    let (tracks, track_windows) = simulate_tracks(&settings, options, &stats)?;
    for (group, windows) in &track_windows {
        keep(&mut kept, group, windows);
    }
    let recordings = options
        .recordings
        .as_deref()
        .map(|dir| evaluate_recordings(pipeline, &settings, dir, &mut progress))
        .transpose()?
        .map(|by_label| {
            by_label
                .into_iter()
                .map(|(label, windows)| {
                    keep(&mut kept, &format!("recording/{label}"), &windows);
                    let r = rates(&windows, &settings, label == "attack");
                    (label, r)
                })
                .collect()
        });
    Ok(LivenessReport {
        mode: settings.mode.name(),
        thresholds: settings,
        frames_per_sequence: options.frames,
        fps: options.fps,
        attacks,
        attacks_all,
        bona_fide_passive,
        tracks,
        recordings,
        windows: kept,
        simulated: "attacks and tracks are simulated (no spoof set and no video of real \
                    people is reachable); bona_fide_passive are real photos; recordings are \
                    the operator's own",
    })
}

/// `--recordings DIR`: every recording of `DIR/manifest.csv` as one window.
fn evaluate_recordings(
    pipeline: &Pipeline,
    settings: &LivenessSettings,
    dir: &Path,
    progress: &mut impl FnMut(&str),
) -> Result<BTreeMap<String, Vec<Window>>, String> {
    let manifest = dir.join("manifest.csv");
    let text = crate::input_file::read_to_string(&manifest, crate::input_file::MANIFEST)
        .map_err(|e| e.to_string())?;
    let mut by_label: BTreeMap<String, Vec<Window>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("path")) {
            continue;
        }
        let at = |what: &str| format!("{} line {}: {what}", manifest.display(), i + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (path, label) = match fields.as_slice() {
            [p, l] | [p, l, _] => (dir.join(p), *l),
            _ => return Err(at("give path,label[,fps]")),
        };
        if label != "bona_fide" && label != "attack" {
            return Err(at(&format!("label `{label}`: give bona_fide or attack")));
        }
        let fps = match fields.get(2) {
            None => 15,
            Some(f) => f
                .parse::<u32>()
                .ok()
                .filter(|f| (1..=240).contains(f))
                .ok_or_else(|| at(&format!("fps `{f}`: give 1 to 240")))?,
        };
        let mut source: Box<dyn FrameSource> = if path.is_dir() {
            Box::new(
                ImageDir::open(path.clone(), fps, false, pipeline.max_pixels)
                    .map_err(|e| at(&e.to_string()))?,
            )
        } else {
            Box::new(
                MjpegFile::open(path.clone(), fps, false, pipeline.max_pixels)
                    .map_err(|e| at(&e.to_string()))?,
            )
        };
        let mut frame = RgbImage::new(1, 1);
        let mut window = LivenessWindow::new();
        let mut tracker = PointTracker::default();
        loop {
            match source.next_frame(&mut frame) {
                Ok(None) => break,
                Ok(Some(meta)) => {
                    let t = meta.timestamp_ms.unwrap_or(0);
                    if let Some(mut e) =
                        frame_evidence(pipeline, &frame).map_err(|e| e.to_string())?
                    {
                        e.follow(&mut tracker, &frame);
                        window.observe(t, e);
                    }
                }
                // A bad frame is skipped as the daemon skips it.
                Err(crate::capture::CaptureError::BadFrame { .. }) => continue,
                Err(e) => return Err(at(&e.to_string())),
            }
        }
        let w = Window::of(&window, settings);
        by_label.entry(label.to_string()).or_default().push(w);
        progress("recordings");
    }
    Ok(by_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(motion: Option<f32>, tracked: Option<f32>) -> Window {
        Window::Judged(Measures {
            frames: 10,
            motion,
            planar_residual: motion.map(|_| 0.2),
            motion_tracked: tracked.map(|_| 0.1),
            planar_residual_tracked: tracked,
            ..Measures::default()
        })
    }

    #[test]
    fn tracked_missing_counts_only_windows_with_motion_and_no_followed_points() {
        let windows = [
            window(Some(0.1), None),
            window(Some(0.1), Some(0.05)),
            window(None, None),
            Window::NoFace,
        ];
        let out = rates(&windows, &LivenessSettings::default(), false);
        assert_eq!(out.n, 4);
        assert_eq!(out.no_face, 1);
        // One of the three judged windows has motion without followed points; the
        // window without motion measures is not the planar cue's to flag.
        let share = out.flagged.get("tracked_missing").copied();
        assert!(
            share.is_some_and(|s| (s - 1.0 / 3.0).abs() < 1e-9),
            "{share:?}"
        );
    }
}
