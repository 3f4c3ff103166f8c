//! `agegate eval --liveness`'s bona fide motion: what the photos tell about the detector's
//! and the mesh's jitter, and keypoint tracks of a 3-D face template turned and moved as a
//! person at a kiosk does, against the same template flattened (a photo).

use std::collections::BTreeMap;

use image::RgbImage;

use super::attacks::{normal, uniform, Motion, Pose};
use super::liveness::{rates, LivenessEvalOptions, TrackReport, Window, TEMPLATE_JSON};
use crate::detect::main_face;
use crate::engine::ModelError;
use crate::liveness::{
    FrameEvidence, LivenessSettings, LivenessWindow, TrackedPoints, MESH_TRACKED,
};
use crate::pipeline::Pipeline;
use crate::tools::degrade::seed_of;
use crate::tools::manifest::Entry;
use crate::tools::stats::Rng;

/// What the photos tell about the detector and the mesh: each keypoint's and landmark's
/// jitter (each photo seen eight times with a sub-pixel shift and sensor noise; standard
/// deviation about the mean after undoing the shift, inter-ocular distances, pooled), and
/// the mesh's 3-D template of the tracked landmarks (median over photos; origin between
/// the eyes, unit the inter-ocular distance).
pub(super) struct PhotoStats {
    keypoint_jitter: [f64; 6],
    mesh_jitter: [f64; MESH_TRACKED.len()],
    /// The followed points' error per frame-to-frame step ([`crate::liveness::track`]),
    /// seeded at the first view's mesh landmarks and followed into each other view.
    tracked_jitter: [f64; MESH_TRACKED.len()],
    mesh_template: [[f64; 3]; MESH_TRACKED.len()],
    photos: usize,
}

pub(super) fn photo_stats(
    pipeline: &Pipeline,
    photos: &[(&Entry, RgbImage)],
) -> Result<PhotoStats, String> {
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
pub(super) fn simulate_tracks(
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
