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

use super::attacks::{normal, uniform, Attack, AttackKind, Motion, Pose};
use crate::capture::files::{ImageDir, MjpegFile};
use crate::capture::FrameSource;
use crate::detect::main_face;
use crate::engine::ModelError;
use crate::liveness::{
    CueFlags, FrameEvidence, LivenessSettings, LivenessWindow, Measures, PointTracker,
    TrackedPoints, Verdict, MESH_TRACKED,
};
use crate::photo::load_rgb_within;
use crate::pipeline::Pipeline;
use crate::tools::degrade::{seed_of, Degradation};
use crate::tools::manifest::Entry;
use crate::tools::stats::Rng;

/// The 3-D template of the six keypoints (`models/face_template_3d.json`).
const TEMPLATE_JSON: &str = include_str!("../../../models/face_template_3d.json");

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
enum Window {
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
fn rates(windows: &[Window], settings: &LivenessSettings, attack: bool) -> Rates {
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

/// What the photos tell about the detector and the mesh: each keypoint's and landmark's
/// jitter (each photo seen eight times with a sub-pixel shift and sensor noise; standard
/// deviation about the mean after undoing the shift, inter-ocular distances, pooled), and
/// the mesh's 3-D template of the tracked landmarks (median over photos; origin between
/// the eyes, unit the inter-ocular distance).
struct PhotoStats {
    keypoint_jitter: [f64; 6],
    mesh_jitter: [f64; MESH_TRACKED.len()],
    /// The followed points' error per frame-to-frame step ([`crate::liveness::track`]),
    /// seeded at the first view's mesh landmarks and followed into each other view.
    tracked_jitter: [f64; MESH_TRACKED.len()],
    mesh_template: [[f64; 3]; MESH_TRACKED.len()],
    photos: usize,
}

fn photo_stats(pipeline: &Pipeline, photos: &[(&Entry, RgbImage)]) -> Result<PhotoStats, String> {
    use crate::warp::{warp_into, Affine, Border};
    let fail = |e: ModelError| e.to_string();
    let models = pipeline.liveness.as_ref().ok_or("liveness is off")?;
    let mut kp_sum = [0.0f64; 6];
    let mut mesh_sum = [0.0f64; MESH_TRACKED.len()];
    let (mut kp_count, mut mesh_count) = (0usize, 0usize);
    let mut tracked_sum = [0.0f64; MESH_TRACKED.len()];
    let mut tracked_count = [0usize; MESH_TRACKED.len()];
    let params = crate::liveness::track::TrackParams::default();
    let mut shapes: Vec<[[f64; 3]; MESH_TRACKED.len()]> = Vec::new();
    for (entry, photo) in photos {
        let mut rng = Rng::new(seed_of(&entry.rel_path) ^ 0x1177E4);
        let mut kp_views: Vec<Vec<[f64; 2]>> = Vec::new();
        let mut mesh_views: Vec<Vec<[f64; 2]>> = Vec::new();
        let mut iod = 0.0;
        // The first view's pyramid, its seed points and shift.
        let mut seeded: Option<(crate::liveness::track::Pyramid, Vec<[f32; 2]>, [f64; 2])> = None;
        let mut tracked_errors: Vec<(usize, f64)> = Vec::new();
        for view_index in 0..8 {
            let (dx, dy) = (uniform(&mut rng, -0.5, 0.5), uniform(&mut rng, -0.5, 0.5));
            let map = Affine::scale_translate(1.0, dx as f32, dy as f32);
            let mut view = RgbImage::new(photo.width(), photo.height());
            warp_into(photo, &map, Border::Replicate, &mut view);
            for p in view.pixels_mut() {
                for c in p.0.iter_mut() {
                    *c = (f64::from(*c) + 2.5 * normal(&mut rng))
                        .round()
                        .clamp(0.0, 255.0) as u8;
                }
            }
            let faces = pipeline.detector.detect(&view).map_err(fail)?;
            let Some(i) = main_face(&faces, view.width(), view.height()) else {
                continue;
            };
            let face = &faces[i];
            // Output pixel x shows source x + dx: the point in the photo is x + dx.
            let unshift = |p: [f32; 2]| [f64::from(p[0]) + dx, f64::from(p[1]) + dy];
            iod = crate::liveness::inter_ocular(&face.keypoints).map_or(iod, f64::from);
            kp_views.push(face.keypoints.iter().map(|p| unshift(*p)).collect());
            let gray = crate::liveness::track::Gray::from_rgb(
                view.width() as usize,
                view.height() as usize,
                view.as_raw(),
            )
            .map(|g| crate::liveness::track::Pyramid::new(g, params.levels));
            if let Some(points) = models.mesh_points(&view, face).map_err(fail)? {
                mesh_views.push(points.iter().map(|p| unshift([p[0], p[1]])).collect());
                if view_index == 0 {
                    shapes.extend(normalised_shape(&points));
                    seeded = gray
                        .clone()
                        .map(|g| (g, points.iter().map(|p| [p[0], p[1]]).collect(), [dx, dy]));
                }
            }
            // A point q of the first view shows the photo at q + shift0: in this view it is
            // at q + shift0 - shift.
            if let (Some((first, seeds, s0)), Some(gray), true) = (&seeded, &gray, view_index > 0) {
                for (j, q) in seeds.iter().enumerate() {
                    if let Some(found) =
                        crate::liveness::track::track_point(first, gray, *q, &params)
                    {
                        let expected = [f64::from(q[0]) + s0[0] - dx, f64::from(q[1]) + s0[1] - dy];
                        let e2 = (f64::from(found[0]) - expected[0]).powi(2)
                            + (f64::from(found[1]) - expected[1]).powi(2);
                        tracked_errors.push((j, e2 / 2.0));
                    }
                }
            }
        }
        if iod <= 0.0 {
            continue;
        }
        let pool = |views: &[Vec<[f64; 2]>], sum: &mut [f64], count: &mut usize| {
            if views.len() < 4 {
                return;
            }
            for (j, s) in sum.iter_mut().enumerate() {
                let mean =
                    [0, 1].map(|c| views.iter().map(|v| v[j][c]).sum::<f64>() / views.len() as f64);
                let var = views
                    .iter()
                    .map(|v| ((v[j][0] - mean[0]).powi(2) + (v[j][1] - mean[1]).powi(2)) / 2.0)
                    .sum::<f64>()
                    / (views.len() - 1) as f64;
                *s += var / (iod * iod);
            }
            *count += 1;
        };
        pool(&kp_views, &mut kp_sum, &mut kp_count);
        for (j, e2) in tracked_errors {
            tracked_sum[j] += e2 / (iod * iod);
            tracked_count[j] += 1;
        }
        pool(&mesh_views, &mut mesh_sum, &mut mesh_count);
    }
    if shapes.is_empty() {
        return Err("the face mesh found no face in the photos: no head template".into());
    }
    let mut mesh_template = [[0.0f64; 3]; MESH_TRACKED.len()];
    for (j, point) in mesh_template.iter_mut().enumerate() {
        for (c, v) in point.iter_mut().enumerate() {
            let mut values: Vec<f64> = shapes.iter().map(|s| s[j][c]).collect();
            values.sort_by(f64::total_cmp);
            *v = values[values.len() / 2];
        }
    }
    let root = |s: f64, n: usize| if n > 0 { (s / n as f64).sqrt() } else { 0.0 };
    Ok(PhotoStats {
        keypoint_jitter: kp_sum.map(|s| root(s, kp_count)),
        mesh_jitter: mesh_sum.map(|s| root(s, mesh_count)),
        tracked_jitter: std::array::from_fn(|j| root(tracked_sum[j], tracked_count[j])),
        mesh_template,
        photos: kp_count,
    })
}

/// A mesh's tracked landmarks with the origin between the eyes' centres and the
/// inter-ocular distance as unit (z in the same unit, away from the camera).
fn normalised_shape(
    points: &[[f32; 3]; MESH_TRACKED.len()],
) -> Option<[[f64; 3]; MESH_TRACKED.len()]> {
    let p = points.map(|q| q.map(f64::from));
    let mid = |a: [f64; 3], b: [f64; 3]| std::array::from_fn::<f64, 3, _>(|c| (a[c] + b[c]) / 2.0);
    let (r, l) = (mid(p[0], p[1]), mid(p[2], p[3]));
    let origin = mid(r, l);
    let iod = ((r[0] - l[0]).powi(2) + (r[1] - l[1]).powi(2)).sqrt();
    (iod > 1e-3).then(|| p.map(|q| std::array::from_fn(|c| (q[c] - origin[c]) / iod)))
}

#[derive(serde::Deserialize)]
struct TemplateFile {
    keypoints: BTreeMap<String, TemplatePoint>,
}

#[derive(serde::Deserialize)]
struct TemplatePoint {
    xyz: [f64; 3],
}

/// The template's names, in the detector's keypoint order.
const TEMPLATE_NAMES: [&str; 6] = [
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
];

/// The six keypoints' 3-D template (x right, y down, z away from the camera; inter-ocular
/// distance 1), in the detector's order.
fn template() -> Result<[[f64; 3]; 6], String> {
    let file: TemplateFile = serde_json::from_str(TEMPLATE_JSON)
        .map_err(|e| format!("models/face_template_3d.json: {e}"))?;
    let mut out = [[0.0; 3]; 6];
    for (slot, name) in out.iter_mut().zip(TEMPLATE_NAMES) {
        *slot = file
            .keypoints
            .get(name)
            .ok_or_else(|| format!("models/face_template_3d.json: no keypoint `{name}`"))?
            .xyz;
    }
    Ok(out)
}

/// Each kind of track's windows, under its CSV group.
type TrackWindows = Vec<(&'static str, Vec<Window>)>;

/// The keypoint tracks (module docs): each track moves the six keypoints' template and
/// the mesh landmarks' template by the same poses, with each point's measured jitter.
fn simulate_tracks(
    settings: &LivenessSettings,
    options: &LivenessEvalOptions,
    stats: &PhotoStats,
) -> Result<(TrackReport, TrackWindows), String> {
    let keypoints = template()?;
    let mesh = stats.mesh_template;
    let flatten = |p: [f64; 3]| [p[0], p[1], 0.0];
    let iod_px = 60.0;
    let depth = 600.0;
    let scale = iod_px * depth / 550.0;
    let run = |flat: bool, rot: f64, shift: f64, seed: u64| {
        let (keypoints, mesh) = if flat {
            (keypoints.map(flatten), mesh.map(flatten))
        } else {
            (keypoints, mesh)
        };
        let mut windows = Vec::with_capacity(options.tracks);
        for i in 0..options.tracks {
            let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            let base = Pose {
                yaw: uniform(&mut rng, -0.2, 0.2),
                pitch: uniform(&mut rng, -0.15, 0.15),
                roll: uniform(&mut rng, -0.1, 0.1),
                t: [
                    uniform(&mut rng, -50.0, 50.0),
                    uniform(&mut rng, -30.0, 30.0),
                    depth,
                ],
            };
            let motion = Motion::random(&mut rng, base, rot, shift);
            let mut window = LivenessWindow::new();
            // Followed points drift: each step adds its own error (a random walk).
            let mut drift = [[0.0f64; 2]; MESH_TRACKED.len()];
            let mut seed_scale = None;
            for k in 0..options.frames {
                let t = k as f64 / options.fps;
                let pose = motion.at(t);
                let seen = |p: &[f64; 3], jitter: f64, rng: &mut Rng| {
                    let q = pose.project(p.map(|v| v * scale)).unwrap_or([f64::NAN; 2]);
                    let noise = jitter * iod_px;
                    [
                        (q[0] + noise * normal(rng)) as f32,
                        (q[1] + noise * normal(rng)) as f32,
                    ]
                };
                let mut evidence = FrameEvidence::default();
                for (j, p) in keypoints.iter().enumerate() {
                    evidence.keypoints[j] = seen(p, stats.keypoint_jitter[j], &mut rng);
                }
                let mut landmarks = [[0.0f32; 2]; MESH_TRACKED.len()];
                for (j, p) in mesh.iter().enumerate() {
                    landmarks[j] = seen(p, stats.mesh_jitter[j], &mut rng);
                }
                evidence.landmarks = Some(landmarks);
                let mut followed = [[0.0f32; 2]; MESH_TRACKED.len()];
                for (j, p) in mesh.iter().enumerate() {
                    let q = pose.project(p.map(|v| v * scale)).unwrap_or([f64::NAN; 2]);
                    if k > 0 {
                        let step = stats.tracked_jitter[j] * iod_px;
                        drift[j][0] += step * normal(&mut rng);
                        drift[j][1] += step * normal(&mut rng);
                    }
                    followed[j] = [(q[0] + drift[j][0]) as f32, (q[1] + drift[j][1]) as f32];
                }
                let scale_px = *seed_scale
                    .get_or_insert_with(|| crate::liveness::mesh_inter_ocular(&followed));
                evidence.tracked = scale_px.map(|scale| TrackedPoints {
                    track: 1,
                    scale,
                    points: followed,
                });
                window.observe((t * 1000.0).round() as u64, evidence);
            }
            windows.push(Window::Judged(window.measures(settings.blink_ratio)));
        }
        windows
    };
    // A person at a kiosk turns a few degrees and sways a few pixels; a still one under a
    // degree and a pixel; a hand-held photo moves as the moving head does.
    let (rot, shift) = (8f64.to_radians(), 15.0);
    let head_windows = run(false, rot, shift, 0x4EAD);
    let still_windows = run(false, 0.8f64.to_radians(), 1.0, 0x5711);
    let flat_windows = run(true, rot, shift, 0xF1A7);
    let report = TrackReport {
        jitter_iod: stats.keypoint_jitter,
        mesh_jitter_iod: stats.mesh_jitter.to_vec(),
        tracked_jitter_iod: stats.tracked_jitter.to_vec(),
        mesh_template: stats.mesh_template.to_vec(),
        jitter_photos: stats.photos,
        head: rates(&head_windows, settings, false),
        still_person: rates(&still_windows, settings, false),
        flat: rates(&flat_windows, settings, true),
    };
    Ok((
        report,
        vec![
            ("track/head", head_windows),
            ("track/still_person", still_windows),
            ("track/flat", flat_windows),
        ],
    ))
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
