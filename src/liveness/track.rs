//! Image points followed from frame to frame without a face prior: pyramidal Lucas-Kanade.
//!
//! Why: the face mesh is a regressor with a 3-D face prior, and it reads a print or a
//! screen tilting in the hand as a head turning (its landmarks depart from a homography
//! smoothly, following the mesh's own depth). A patch of image followed by its own
//! brightness has no prior: on a photo it moves as the photo's plane does, on a head as
//! the skin under it does. The points are seeded at the first frame's mesh landmarks and
//! then follow the image alone.
//!
//! The tracker (Bouguet's pyramidal form): each point's window of the previous frame is
//! matched in the next, coarse level first, by Gauss-Newton on the brightness difference
//! (gradients of the previous frame, bilinear sampling); a point whose window has too
//! little texture (the smaller eigenvalue of its structure tensor), that leaves the frame,
//! or that does not come back to where it started when tracked backwards, is lost.
//! No allocation per point; the pyramids are the only buffers.

/// A grey image, f32 levels 0..255.
#[derive(Debug, Clone, Default)]
pub struct Gray {
    width: usize,
    height: usize,
    px: Vec<f32>,
}

impl Gray {
    /// From interleaved RGB8 pixels (`width * height * 3` bytes), BT.601 luma.
    pub fn from_rgb(width: usize, height: usize, rgb: &[u8]) -> Option<Self> {
        if width == 0 || height == 0 || rgb.len() != width.checked_mul(height)?.checked_mul(3)? {
            return None;
        }
        let px = rgb
            .chunks_exact(3)
            .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
            .collect();
        Some(Self { width, height, px })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    fn get(&self, x: usize, y: usize) -> f32 {
        self.px[y * self.width + x]
    }

    /// Bilinear sample; `None` outside the pixel centres' hull.
    fn sample(&self, x: f32, y: f32) -> Option<f32> {
        if x.is_nan() || y.is_nan() || x < 0.0 || y < 0.0 {
            return None;
        }
        let (x0, y0) = (x as usize, y as usize);
        if x0 + 1 >= self.width || y0 + 1 >= self.height {
            return None;
        }
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let top = self.get(x0, y0) * (1.0 - fx) + self.get(x0 + 1, y0) * fx;
        let bottom = self.get(x0, y0 + 1) * (1.0 - fx) + self.get(x0 + 1, y0 + 1) * fx;
        Some(top * (1.0 - fy) + bottom * fy)
    }

    /// Half size: a [1 2 1] / 4 blur in each direction, then every second pixel (the blur
    /// keeps a screen's pixel grid from aliasing into the coarser levels).
    fn half(&self) -> Self {
        let (w, h) = ((self.width / 2).max(1), (self.height / 2).max(1));
        let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
        let mut px = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let (cx, cy) = (2 * x as isize, 2 * y as isize);
                let mut sum = 0.0;
                for (dy, wy) in [(-1isize, 1.0f32), (0, 2.0), (1, 1.0)] {
                    for (dx, wx) in [(-1isize, 1.0f32), (0, 2.0), (1, 1.0)] {
                        sum += wx
                            * wy
                            * self.get(clamp(cx + dx, self.width), clamp(cy + dy, self.height));
                    }
                }
                px.push(sum / 16.0);
            }
        }
        Self {
            width: w,
            height: h,
            px,
        }
    }
}

/// A frame's levels, full size first.
#[derive(Debug, Clone, Default)]
pub struct Pyramid {
    levels: Vec<Gray>,
}

impl Pyramid {
    /// `levels` levels (at least one; fewer when the image gets too small).
    pub fn new(base: Gray, levels: usize) -> Self {
        let mut all = vec![base];
        while all.len() < levels.max(1) {
            let last = &all[all.len() - 1];
            if last.width < 16 || last.height < 16 {
                break;
            }
            let next = last.half();
            all.push(next);
        }
        Self { levels: all }
    }
}

/// How points are followed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackParams {
    /// Pyramid levels searched (each halves the image).
    pub levels: usize,
    /// The matching window's half size, pixels of each level.
    pub half_window: usize,
    /// Smallest eigenvalue of the window's structure tensor per pixel of the window
    /// (grey levels squared): below it the window has no texture to follow.
    pub min_eigen: f32,
    /// Largest forward-backward error, pixels of the full image.
    pub max_round_trip: f32,
    /// The finest level matched (0: full size). At 1 the match ends on the blurred,
    /// halved image, where a screen's pixel grid and moire no longer pull the windows:
    /// on simulated screens made from UTKFace train it passes 1.6 % of moving ones against
    /// 9.2 % at 0, the same 3 % of simulated heads referred (README "Liveness").
    pub finest_level: usize,
}

impl Default for TrackParams {
    fn default() -> Self {
        Self {
            levels: 3,
            half_window: 7,
            min_eigen: 1.0,
            max_round_trip: 0.7,
            finest_level: 1,
        }
    }
}

/// Where `point` of `prev` is in `next`, `None` when it is lost (module docs).
pub fn track_point(
    prev: &Pyramid,
    next: &Pyramid,
    point: [f32; 2],
    params: &TrackParams,
) -> Option<[f32; 2]> {
    let there = follow(prev, next, point, params)?;
    let back = follow(next, prev, there, params)?;
    let round_trip = ((back[0] - point[0]).powi(2) + (back[1] - point[1]).powi(2)).sqrt();
    (round_trip <= params.max_round_trip).then_some(there)
}

fn follow(
    prev: &Pyramid,
    next: &Pyramid,
    point: [f32; 2],
    params: &TrackParams,
) -> Option<[f32; 2]> {
    if !(point[0].is_finite() && point[1].is_finite()) {
        return None;
    }
    let levels = prev
        .levels
        .len()
        .min(next.levels.len())
        .min(params.levels.max(1));
    let finest = params.finest_level.min(levels - 1);
    // The displacement found so far, in pixels of the current level.
    let mut d = [0.0f32; 2];
    for level in (finest..levels).rev() {
        let scale = (1u32 << level) as f32;
        let p = [point[0] / scale, point[1] / scale];
        d = refine(
            &prev.levels[level],
            &next.levels[level],
            p,
            d,
            params,
            level == finest,
        )?;
        if level > finest {
            d = [2.0 * d[0], 2.0 * d[1]];
        }
    }
    let scale = (1u32 << finest) as f32;
    Some([point[0] + scale * d[0], point[1] + scale * d[1]])
}

/// Gauss-Newton on one level: the displacement `d` (from `guess`) that best matches the
/// window around `p` of `a` in `b`. On the finest level a window without texture or
/// outside the image loses the point; on the coarser levels it keeps the guess (the
/// finer levels may still find it).
fn refine(
    a: &Gray,
    b: &Gray,
    p: [f32; 2],
    guess: [f32; 2],
    params: &TrackParams,
    finest: bool,
) -> Option<[f32; 2]> {
    const MAX_ITERATIONS: usize = 20;
    const WINDOW: usize = 2 * 15 + 1;
    let r = params.half_window.min(15) as isize;
    let side = (2 * r + 1) as usize;
    let mut template = [0.0f32; WINDOW * WINDOW];
    let mut grad = [[0.0f32; 2]; WINDOW * WINDOW];
    let (mut gxx, mut gxy, mut gyy) = (0.0f32, 0.0f32, 0.0f32);
    let keep_or_lose = |guess: [f32; 2]| (!finest).then_some(guess);
    for j in -r..=r {
        for i in -r..=r {
            let (x, y) = (p[0] + i as f32, p[1] + j as f32);
            let (Some(c), Some(l), Some(rt), Some(u), Some(dn)) = (
                a.sample(x, y),
                a.sample(x - 1.0, y),
                a.sample(x + 1.0, y),
                a.sample(x, y - 1.0),
                a.sample(x, y + 1.0),
            ) else {
                return keep_or_lose(guess);
            };
            let k = (j + r) as usize * side + (i + r) as usize;
            let g = [(rt - l) / 2.0, (dn - u) / 2.0];
            template[k] = c;
            grad[k] = g;
            gxx += g[0] * g[0];
            gxy += g[0] * g[1];
            gyy += g[1] * g[1];
        }
    }
    let n = (side * side) as f32;
    let det = gxx * gyy - gxy * gxy;
    let min_eigen = ((gxx + gyy) - ((gxx - gyy).powi(2) + 4.0 * gxy * gxy).sqrt()) / 2.0;
    // NaN (a NaN pixel) is no texture either.
    let textured = (min_eigen / n)
        .partial_cmp(&params.min_eigen)
        .is_some_and(|o| o.is_ge());
    if !textured || det.abs() < 1e-6 {
        return keep_or_lose(guess);
    }
    let mut d = guess;
    for _ in 0..MAX_ITERATIONS {
        let (mut bx, mut by) = (0.0f32, 0.0f32);
        for j in -r..=r {
            for i in -r..=r {
                let k = (j + r) as usize * side + (i + r) as usize;
                let (x, y) = (p[0] + d[0] + i as f32, p[1] + d[1] + j as f32);
                let Some(v) = b.sample(x, y) else {
                    return keep_or_lose(guess);
                };
                let diff = template[k] - v;
                bx += diff * grad[k][0];
                by += diff * grad[k][1];
            }
        }
        let step = [(gyy * bx - gxy * by) / det, (gxx * by - gxy * bx) / det];
        d = [d[0] + step[0], d[1] + step[1]];
        if !(d[0].is_finite() && d[1].is_finite()) {
            return None;
        }
        if step[0].abs() < 0.01 && step[1].abs() < 0.01 {
            break;
        }
    }
    Some(d)
}

/// Points followed since a seed: MESH_TRACKED-many, NaN where lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedPoints {
    /// Which track: a new seed (another face, too many points lost) starts another, and
    /// points of different tracks are not the same features.
    pub track: u32,
    /// The seed's inter-ocular distance, photo pixels (the cues' unit).
    pub scale: f32,
    pub points: [[f32; 2]; TRACKED],
}

/// How many points a track follows (the mesh landmarks it is seeded at).
pub const TRACKED: usize = super::MESH_TRACKED.len();

/// Fewest points alive for a track to go on (else it is seeded again).
pub const MIN_ALIVE: usize = 8;

/// Largest median distance (inter-ocular distances) of the followed points from the
/// frame's mesh landmarks: past it the points are not on this face any more (another
/// person stepped in, or they slid off) and the tracker seeds again. A print's mesh departs
/// from its followed points by a few hundredths (the mesh reads a tilt as a turn).
pub const MAX_DRIFT: f32 = 0.3;

/// The median distance of the finite `points` from their `landmarks` (infinite if none).
fn median_distance(points: &[[f32; 2]; TRACKED], landmarks: &[[f32; 2]; TRACKED]) -> f32 {
    let mut d = [f32::INFINITY; TRACKED];
    let mut n = 0;
    for (p, l) in points.iter().zip(landmarks) {
        let v = ((p[0] - l[0]).powi(2) + (p[1] - l[1]).powi(2)).sqrt();
        if v.is_finite() {
            d[n] = v;
            n += 1;
        }
    }
    if n == 0 {
        return f32::INFINITY;
    }
    d[..n].sort_unstable_by(f32::total_cmp);
    d[n / 2]
}

/// One face's points over frames: seeded at a frame's mesh landmarks, then followed in the
/// image alone. Holds the previous frame's pyramid.
#[derive(Debug, Clone, Default)]
pub struct PointTracker {
    params: TrackParams,
    previous: Option<(Pyramid, TrackedPoints)>,
    tracks: u32,
}

impl PointTracker {
    pub fn new(params: TrackParams) -> Self {
        Self {
            params,
            previous: None,
            tracks: 0,
        }
    }

    /// Forgets the face (another person).
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// The points in `frame`: followed from the previous frame, or seeded at `seed` (the
    /// frame's mesh landmarks, with the seed's inter-ocular distance) when there is no
    /// track or too few of its points are left; `None` without either.
    pub fn observe(
        &mut self,
        frame: Gray,
        seed: Option<([[f32; 2]; TRACKED], f32)>,
    ) -> Option<TrackedPoints> {
        let pyramid = Pyramid::new(frame, self.params.levels);
        let followed = self.previous.as_ref().and_then(|(before, points)| {
            let mut next = *points;
            for (p, q) in points.points.iter().zip(next.points.iter_mut()) {
                *q = track_point(before, &pyramid, *p, &self.params).unwrap_or([f32::NAN; 2]);
            }
            let alive = next.points.iter().filter(|p| p[0].is_finite()).count();
            let on_the_face = seed.is_none_or(|(landmarks, scale)| {
                median_distance(&next.points, &landmarks) <= MAX_DRIFT * scale
            });
            (alive >= MIN_ALIVE && on_the_face).then_some(next)
        });
        let points = followed.or_else(|| {
            let (points, scale) = seed?;
            let finite = points.iter().flatten().all(|v| v.is_finite());
            (finite && scale.is_finite() && scale > 0.0).then(|| {
                self.tracks = self.tracks.wrapping_add(1);
                TrackedPoints {
                    track: self.tracks,
                    scale,
                    points,
                }
            })
        });
        self.previous = points.map(|p| (pyramid, p));
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured image: Gaussian blobs of several sizes at seeded places (broadband, as
    /// a face is; a periodic texture would alias in the coarse levels).
    fn texture(width: usize, height: usize, shift: [f32; 2]) -> Gray {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let blobs: Vec<[f32; 4]> = (0..250)
            .map(|_| {
                let (x, y) = (next() * width as f32, next() * height as f32);
                [x, y, 2.0 + 10.0 * next(), 120.0 * (next() - 0.5)]
            })
            .collect();
        let mut px = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let (u, v) = (x as f32 - shift[0], y as f32 - shift[1]);
                let value: f32 = blobs
                    .iter()
                    .map(|b| {
                        let d2 = (u - b[0]).powi(2) + (v - b[1]).powi(2);
                        b[3] * (-d2 / (2.0 * b[2] * b[2])).exp()
                    })
                    .sum();
                px.push(128.0 + value);
            }
        }
        Gray { width, height, px }
    }

    #[test]
    fn a_shifted_texture_is_followed_to_a_few_hundredths_of_a_pixel() {
        let a = Pyramid::new(texture(160, 120, [0.0, 0.0]), 4);
        // Ending on the full image is finer than ending on the halved one.
        for (finest, tolerance) in [(0, 0.02f32), (1, 0.05)] {
            let params = TrackParams {
                finest_level: finest,
                ..TrackParams::default()
            };
            for shift in [[0.3f32, -0.4], [3.7, 1.2], [-9.5, 6.25]] {
                let b = Pyramid::new(texture(160, 120, shift), 4);
                for p in [[50.0f32, 40.0], [80.0, 60.0], [100.5, 70.25]] {
                    let q = track_point(&a, &b, p, &params).expect("tracked");
                    let err = [q[0] - p[0] - shift[0], q[1] - p[1] - shift[1]];
                    assert!(
                        err[0].abs() < tolerance && err[1].abs() < tolerance,
                        "level {finest}, {p:?} {shift:?}: {q:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flat_window_and_a_point_off_the_image_are_lost() {
        let flat = Gray {
            width: 64,
            height: 64,
            px: vec![100.0; 64 * 64],
        };
        let a = Pyramid::new(flat.clone(), 3);
        assert_eq!(
            track_point(&a, &a, [32.0, 32.0], &TrackParams::default()),
            None
        );
        let t = Pyramid::new(texture(64, 64, [0.0, 0.0]), 3);
        assert_eq!(
            track_point(&t, &t, [2.0, 30.0], &TrackParams::default()),
            None
        );
        assert_eq!(
            track_point(&t, &t, [f32::NAN, 30.0], &TrackParams::default()),
            None
        );
    }

    #[test]
    fn a_point_whose_content_is_gone_fails_the_round_trip() {
        let a = Pyramid::new(texture(160, 120, [0.0, 0.0]), 4);
        // Another texture altogether: whatever forward finds, backward does not return.
        let mut other = texture(160, 120, [0.0, 0.0]);
        for (k, v) in other.px.iter_mut().enumerate() {
            *v = 128.0 + 60.0 * ((k as f32) * 0.7).sin() * ((k / 160) as f32 * 0.9).cos();
        }
        let b = Pyramid::new(other, 4);
        let lost = [[50.0f32, 40.0], [80.0, 60.0], [100.0, 70.0], [60.0, 80.0]]
            .iter()
            .filter(|p| track_point(&a, &b, **p, &TrackParams::default()).is_none())
            .count();
        assert!(lost >= 3, "only {lost} of 4 lost");
    }

    #[test]
    fn rgb_of_the_wrong_length_is_refused() {
        assert!(Gray::from_rgb(2, 2, &[0; 11]).is_none());
        assert!(Gray::from_rgb(0, 2, &[]).is_none());
        let g = Gray::from_rgb(2, 1, &[255, 255, 255, 0, 0, 0]).expect("gray");
        assert!((g.get(0, 0) - 255.0).abs() < 1e-3 && g.get(1, 0).abs() < 1e-6);
    }
}
