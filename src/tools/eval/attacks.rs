//! Synthetic presentation attacks for `agegate eval --liveness`: a labelled photo shown to
//! the camera as a print or on a screen, as a sequence of frames, seeded per photo.
//!
//! No spoof set and no video of real people is reachable here, so attacks are made the way
//! they happen physically: the photo becomes a *medium* (paper: a white margin, paper
//! texture, contrast lost to ink and a glare patch; a screen: the photo on a pixel grid of
//! RGB sub-pixel stripes, a black bezel, brightness and a blue colour shift), the medium is
//! a plane in front of a pinhole camera, tilted and moved over the window (or held still),
//! and each frame is that plane's image in a scene, with sensor noise. The camera samples
//! the screen's pixel grid below its pitch, which makes the moire.

use image::{Rgb, RgbImage};

use crate::tools::stats::Rng;

/// The scene every attack is shown in (a kiosk camera's VGA).
pub const SCENE_W: u32 = 640;
pub const SCENE_H: u32 = 480;
/// The camera's focal length in pixels (about 60 degrees across VGA).
const FOCAL: f64 = 550.0;

/// The kinds of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// A printed photo, tilted and moved.
    Print,
    /// The photo on a phone or tablet screen, moved rigidly.
    Replay,
    /// A print held still (on a stand).
    PrintStill,
    /// A screen held still.
    ReplayStill,
}

impl AttackKind {
    pub const ALL: [AttackKind; 4] = [
        AttackKind::Print,
        AttackKind::Replay,
        AttackKind::PrintStill,
        AttackKind::ReplayStill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Print => "print",
            Self::Replay => "replay",
            Self::PrintStill => "print_still",
            Self::ReplayStill => "replay_still",
        }
    }

    fn screen(self) -> bool {
        matches!(self, Self::Replay | Self::ReplayStill)
    }

    fn still(self) -> bool {
        matches!(self, Self::PrintStill | Self::ReplayStill)
    }
}

pub(crate) fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    lo + (hi - lo) * u
}

pub(crate) fn normal(rng: &mut Rng) -> f64 {
    let u1 = uniform(rng, f64::MIN_POSITIVE, 1.0);
    let u2 = uniform(rng, 0.0, 1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A pose of a plane (or a head): rotations in radians (yaw about y, pitch about x, roll
/// about z) and the centre's position in camera coordinates (pixels of the focal plane).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pose {
    pub yaw: f64,
    pub pitch: f64,
    pub roll: f64,
    pub t: [f64; 3],
}

impl Pose {
    /// The rotation matrix, `R = Rz(roll) Ry(yaw) Rx(pitch)`.
    pub fn rotation(&self) -> [[f64; 3]; 3] {
        let (cy, sy) = (self.yaw.cos(), self.yaw.sin());
        let (cp, sp) = (self.pitch.cos(), self.pitch.sin());
        let (cr, sr) = (self.roll.cos(), self.roll.sin());
        let rx = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
        let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
        let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
        mul3(&rz, &mul3(&ry, &rx))
    }

    /// The image of a point given in the object's own frame.
    pub fn project(&self, p: [f64; 3]) -> Option<[f64; 2]> {
        let r = self.rotation();
        let c: [f64; 3] =
            std::array::from_fn(|i| r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2] + self.t[i]);
        (c[2] > 1.0).then(|| {
            [
                FOCAL * c[0] / c[2] + f64::from(SCENE_W) / 2.0,
                FOCAL * c[1] / c[2] + f64::from(SCENE_H) / 2.0,
            ]
        })
    }
}

pub(crate) fn mul3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

/// Smooth motion over a window: each parameter a sinusoid of its own amplitude, phase
/// and a frequency from 0.3 to 1 Hz about the base pose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Motion {
    base: Pose,
    amplitude: [f64; 6],
    freq_hz: [f64; 6],
    phase: [f64; 6],
}

impl Motion {
    /// `rot` (radians) and `shift` (pixels at the focal plane) bound the amplitudes.
    pub fn random(rng: &mut Rng, base: Pose, rot: f64, shift: f64) -> Self {
        let amplitude = [
            uniform(rng, 0.3, 1.0) * rot,
            uniform(rng, 0.3, 1.0) * rot,
            uniform(rng, 0.2, 0.6) * rot,
            uniform(rng, 0.3, 1.0) * shift,
            uniform(rng, 0.3, 1.0) * shift,
            uniform(rng, 0.0, 1.0) * shift * 2.0,
        ];
        Self {
            base,
            amplitude,
            freq_hz: std::array::from_fn(|_| uniform(rng, 0.3, 1.0)),
            phase: std::array::from_fn(|_| uniform(rng, 0.0, std::f64::consts::TAU)),
        }
    }

    pub fn at(&self, t_s: f64) -> Pose {
        let d: [f64; 6] = std::array::from_fn(|i| {
            self.amplitude[i]
                * (std::f64::consts::TAU * self.freq_hz[i] * t_s + self.phase[i]).sin()
        });
        Pose {
            yaw: self.base.yaw + d[0],
            pitch: self.base.pitch + d[1],
            roll: self.base.roll + d[2],
            t: [
                self.base.t[0] + d[3],
                self.base.t[1] + d[4],
                self.base.t[2] + d[5],
            ],
        }
    }
}

/// The photo printed: a white margin, ink that loses contrast, paper grain and a glare.
fn print_medium(photo: &RgbImage, rng: &mut Rng) -> RgbImage {
    let (w, h) = photo.dimensions();
    let margin = (w.max(h) as f64 * uniform(rng, 0.08, 0.2)) as u32;
    let (mw, mh) = (w + 2 * margin, h + 2 * margin);
    let contrast = uniform(rng, 0.6, 0.8);
    let warm = [1.0, uniform(rng, 0.95, 1.0), uniform(rng, 0.85, 0.95)];
    let (gx, gy) = (
        uniform(rng, 0.2, 0.8) * f64::from(mw),
        uniform(rng, 0.2, 0.8) * f64::from(mh),
    );
    let glare_r = uniform(rng, 0.12, 0.3) * f64::from(mw);
    let glare = uniform(rng, 60.0, 140.0);
    RgbImage::from_fn(mw, mh, |x, y| {
        let ink = if x >= margin && y >= margin && x < margin + w && y < margin + h {
            let p = photo.get_pixel(x - margin, y - margin);
            p.0.map(|v| contrast * (f64::from(v) - 128.0) + 128.0 + 12.0)
        } else {
            [245.0; 3]
        };
        let grain = normal(rng) * 5.0;
        let d2 = (f64::from(x) - gx).powi(2) + (f64::from(y) - gy).powi(2);
        let g = glare * (-d2 / (2.0 * glare_r * glare_r)).exp();
        Rgb(std::array::from_fn(|c| {
            (ink[c] * warm[c] + grain + g).round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// The photo on a screen: each screen pixel three stripes (R, G, B), a bezel, the
/// backlight's brightness and blue cast.
fn screen_medium(photo: &RgbImage, rng: &mut Rng) -> RgbImage {
    const SUB: u32 = 3;
    let (w, h) = photo.dimensions();
    let bezel = (w.max(h) as f64 * uniform(rng, 0.05, 0.12)) as u32 * SUB;
    let (sw, sh) = (w * SUB + 2 * bezel, h * SUB + 2 * bezel);
    let gain = uniform(rng, 1.0, 1.25);
    let cast = [uniform(rng, 0.85, 0.95), 1.0, uniform(rng, 1.05, 1.2)];
    // A stripe lights its own channel; the others leak a little through the filter.
    let leak = 0.25;
    let stripe = 3.0 / (1.0 + 2.0 * leak);
    RgbImage::from_fn(sw, sh, |x, y| {
        let inside = x >= bezel && y >= bezel && x < bezel + w * SUB && y < bezel + h * SUB;
        if !inside {
            return Rgb([12, 12, 14]);
        }
        let (px, py) = ((x - bezel) / SUB, (y - bezel) / SUB);
        let p = photo.get_pixel(px, py);
        let lit = ((x - bezel) % SUB) as usize;
        Rgb(std::array::from_fn(|c| {
            let filter = if c == lit { 1.0 } else { leak };
            (f64::from(p[c]) * gain * cast[c] * filter * stripe)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    })
}

/// A plain room behind the medium: a gradient and a few soft blobs, seeded.
fn scene(rng: &mut Rng) -> RgbImage {
    let base = [
        uniform(rng, 70.0, 150.0),
        uniform(rng, 70.0, 150.0),
        uniform(rng, 70.0, 150.0),
    ];
    let slope = [uniform(rng, -0.1, 0.1), uniform(rng, -0.1, 0.1)];
    let blobs: Vec<(f64, f64, f64, f64)> = (0..4)
        .map(|_| {
            (
                uniform(rng, 0.0, f64::from(SCENE_W)),
                uniform(rng, 0.0, f64::from(SCENE_H)),
                uniform(rng, 40.0, 160.0),
                uniform(rng, -40.0, 40.0),
            )
        })
        .collect();
    RgbImage::from_fn(SCENE_W, SCENE_H, |x, y| {
        let (fx, fy) = (f64::from(x), f64::from(y));
        let mut v = slope[0] * fx + slope[1] * fy;
        for (bx, by, r, a) in &blobs {
            v += a * (-((fx - bx).powi(2) + (fy - by).powi(2)) / (2.0 * r * r)).exp();
        }
        Rgb(base.map(|b| (b + v).round().clamp(0.0, 255.0) as u8))
    })
}

/// One attack: the medium, its motion and the scene behind it.
pub struct Attack {
    kind: AttackKind,
    medium: RgbImage,
    /// Medium pixels per focal-plane pixel at depth 1 (the medium's physical size).
    scale: f64,
    motion: Motion,
    background: RgbImage,
    seed: u64,
}

impl Attack {
    /// An attack of `kind` made from `photo` (a face crop, UTKFace-like), seeded.
    pub fn new(kind: AttackKind, photo: &RgbImage, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5EED_A77A);
        let medium = if kind.screen() {
            screen_medium(photo, &mut rng)
        } else {
            print_medium(photo, &mut rng)
        };
        let sub = if kind.screen() { 3.0 } else { 1.0 };
        // The photo appears 150 to 260 px wide at a depth of 600 px.
        let depth = 600.0;
        let shown = uniform(&mut rng, 150.0, 260.0);
        let scale = shown * depth / FOCAL / (f64::from(photo.width()) * sub);
        let tilt = if kind.screen() { 15f64 } else { 25f64 }.to_radians();
        let base = Pose {
            yaw: uniform(&mut rng, -tilt, tilt),
            pitch: uniform(&mut rng, -tilt, tilt),
            roll: uniform(&mut rng, -0.15, 0.15),
            t: [
                uniform(&mut rng, -60.0, 60.0),
                uniform(&mut rng, -40.0, 40.0),
                depth,
            ],
        };
        let (rot, shift) = if kind.still() {
            (0.0, 0.0)
        } else if kind.screen() {
            (6f64.to_radians(), 25.0)
        } else {
            (8f64.to_radians(), 30.0)
        };
        let motion = Motion::random(&mut rng, base, rot, shift);
        Self {
            kind,
            medium,
            scale,
            motion,
            background: scene(&mut rng),
            seed,
        }
    }

    pub fn kind(&self) -> AttackKind {
        self.kind
    }

    /// The scene without the medium (the moments before it is held up), with noise.
    pub fn background(&self, index: u64) -> RgbImage {
        let mut rng = Rng::new(self.seed ^ index.wrapping_mul(0x9E37_79B9) ^ 0xB6);
        let mut frame = self.background.clone();
        add_noise(&mut frame, &mut rng);
        frame
    }

    /// The frame at `t_s` seconds.
    pub fn frame(&self, t_s: f64, index: u64) -> RgbImage {
        let pose = self.motion.at(t_s);
        let (mw, mh) = (
            f64::from(self.medium.width()),
            f64::from(self.medium.height()),
        );
        // Medium pixel (u, v) -> camera: R [s (u - uc), s (v - vc), 0] + t, so the image is
        // the homography K [s r1, s r2, t - s uc r1 - s vc r2].
        let r = pose.rotation();
        let s = self.scale;
        let (uc, vc) = (mw / 2.0, mh / 2.0);
        let (cx, cy) = (f64::from(SCENE_W) / 2.0, f64::from(SCENE_H) / 2.0);
        let col = |j: usize| [r[0][j] * s, r[1][j] * s, r[2][j] * s];
        let (c1, c2) = (col(0), col(1));
        let c3: [f64; 3] = std::array::from_fn(|i| pose.t[i] - uc * c1[i] - vc * c2[i]);
        let k = [[FOCAL, 0.0, cx], [0.0, FOCAL, cy], [0.0, 0.0, 1.0]];
        let m = [
            [c1[0], c2[0], c3[0]],
            [c1[1], c2[1], c3[1]],
            [c1[2], c2[2], c3[2]],
        ];
        let h = mul3(&k, &m);
        let inv = invert3(&h);
        let mut rng = Rng::new(self.seed ^ index.wrapping_mul(0x9E37_79B9));
        let mut frame = self.background.clone();
        // Only the pixels inside the medium's projected outline need the homography.
        let corners = [[0.0, 0.0], [mw, 0.0], [0.0, mh], [mw, mh]].map(|[u, v]| {
            let w = h[2][0] * u + h[2][1] * v + h[2][2];
            [
                (h[0][0] * u + h[0][1] * v + h[0][2]) / w,
                (h[1][0] * u + h[1][1] * v + h[1][2]) / w,
            ]
        });
        let span = |c: usize, limit: u32| {
            let lo = corners.iter().map(|p| p[c]).fold(f64::INFINITY, f64::min);
            let hi = corners
                .iter()
                .map(|p| p[c])
                .fold(f64::NEG_INFINITY, f64::max);
            let clamp = |v: f64| v.clamp(0.0, f64::from(limit)) as u32;
            (clamp(lo.floor()), clamp(hi.ceil() + 1.0))
        };
        let ((x0, x1), (y0, y1)) = (span(0, SCENE_W), span(1, SCENE_H));
        if let Some(inv) = inv.filter(|_| corners.iter().flatten().all(|v| v.is_finite())) {
            // A sensor pixel integrates the light over its area: four taps per pixel, not
            // a point sample (which would alias a screen's pixel grid far beyond what a
            // camera's optics let through).
            const TAPS: [(f64, f64); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
            for y in y0..y1 {
                for x in x0..x1 {
                    let mut sum = [0.0f64; 3];
                    let mut inside = 0;
                    for (ox, oy) in TAPS {
                        let (fx, fy) = (f64::from(x) + ox, f64::from(y) + oy);
                        let w = inv[2][0] * fx + inv[2][1] * fy + inv[2][2];
                        if w.abs() < 1e-12 {
                            continue;
                        }
                        let u = (inv[0][0] * fx + inv[0][1] * fy + inv[0][2]) / w - 0.5;
                        let v = (inv[1][0] * fx + inv[1][1] * fy + inv[1][2]) / w - 0.5;
                        if u >= 0.0 && v >= 0.0 && u < mw - 1.0 && v < mh - 1.0 {
                            let p = bilinear(&self.medium, u, v);
                            (0..3).for_each(|c| sum[c] += p[c]);
                            inside += 1;
                        }
                    }
                    if inside > 0 {
                        // The medium's edge pixels mix with the scene behind them.
                        let behind = frame.get_pixel(x, y).0;
                        let share = f64::from(inside) / 4.0;
                        let mixed: [u8; 3] = std::array::from_fn(|c| {
                            (sum[c] / 4.0 + f64::from(behind[c]) * (1.0 - share)).round() as u8
                        });
                        frame.put_pixel(x, y, Rgb(mixed));
                    }
                }
            }
        }
        add_noise(&mut frame, &mut rng);
        frame
    }
}

/// Standard normal draws, made once: sensor noise reads them from a seeded offset, so a
/// frame costs no transcendental per pixel.
fn noise_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut rng = Rng::new(0x4015E);
        (0..1 << 16).map(|_| normal(&mut rng) as f32).collect()
    })
}

/// Sensor noise (sigma 2.5 levels), new in every frame.
fn add_noise(frame: &mut RgbImage, rng: &mut Rng) {
    let table = noise_table();
    let mask = table.len() - 1;
    let mut at = rng.next_u64() as usize;
    // An odd stride walks the whole table before repeating.
    let stride = (rng.next_u64() as usize) | 1;
    for c in frame.iter_mut() {
        at = at.wrapping_add(stride);
        *c = (f32::from(*c) + 2.5 * table[at & mask])
            .round()
            .clamp(0.0, 255.0) as u8;
    }
}

fn bilinear(image: &RgbImage, u: f64, v: f64) -> [f64; 3] {
    let (x0, y0) = (u.floor() as u32, v.floor() as u32);
    let (fx, fy) = (u - u.floor(), v - v.floor());
    let px = |x: u32, y: u32| image.get_pixel(x, y).0;
    let (a, b, c, d) = (
        px(x0, y0),
        px(x0 + 1, y0),
        px(x0, y0 + 1),
        px(x0 + 1, y0 + 1),
    );
    std::array::from_fn(|k| {
        let top = f64::from(a[k]) * (1.0 - fx) + f64::from(b[k]) * fx;
        let bottom = f64::from(c[k]) * (1.0 - fx) + f64::from(d[k]) * fx;
        top * (1.0 - fy) + bottom * fy
    })
}

pub(crate) fn invert3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-12 {
        return None;
    }
    let c =
        |r1: usize, c1: usize, r2: usize, c2: usize| m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1];
    Some([
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> RgbImage {
        RgbImage::from_fn(40, 40, |x, y| Rgb([(x * 6) as u8, (y * 6) as u8, 128]))
    }

    #[test]
    fn the_same_seed_makes_the_same_frames() {
        for kind in AttackKind::ALL {
            let a = Attack::new(kind, &photo(), 7);
            let b = Attack::new(kind, &photo(), 7);
            assert_eq!(a.frame(0.5, 3), b.frame(0.5, 3), "{}", kind.name());
        }
    }

    #[test]
    fn a_still_attack_only_changes_by_noise_and_a_moving_one_moves() {
        let diff = |a: &RgbImage, b: &RgbImage| {
            a.pixels()
                .zip(b.pixels())
                .map(|(p, q)| {
                    (0..3)
                        .map(|c| (i32::from(p[c]) - i32::from(q[c])).abs())
                        .sum::<i32>()
                })
                .filter(|d| *d > 40)
                .count()
        };
        let still = Attack::new(AttackKind::PrintStill, &photo(), 1);
        assert_eq!(diff(&still.frame(0.0, 0), &still.frame(1.0, 1)), 0);
        let moving = Attack::new(AttackKind::Print, &photo(), 1);
        assert!(diff(&moving.frame(0.0, 0), &moving.frame(1.0, 1)) > 100);
    }

    #[test]
    fn the_inverse_undoes_the_matrix() {
        let m = [[2.0, 0.3, 5.0], [0.1, 1.5, -2.0], [0.001, 0.002, 1.0]];
        let i = invert3(&m).unwrap();
        let p = mul3(&m, &i);
        for (r, row) in p.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
    }
}
