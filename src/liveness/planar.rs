//! The planarity cue: how far six keypoints are from moving as a plane.
//!
//! Points on a plane, seen by a pinhole camera from two poses, are related by a homography
//! (8 degrees of freedom). Six points give 12 equations, so 4 are left over: the residual
//! of the least-squares homography is zero, up to detection jitter, for a photo or a screen
//! however it is tilted or moved, and grows with the parallax of a real head turning.
//!
//! The fit is the direct linear transform with `h33 = 1` (the motions between frames of a
//! window are near the identity, far from `h33 = 0`) on Hartley-normalised points (centred,
//! mean distance sqrt 2), solved by Gaussian elimination with partial pivoting in f64.

/// A 3 x 3 homography, row-major, mapping `from` points to `to` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub [[f64; 3]; 3]);

impl Homography {
    pub fn apply(&self, p: [f64; 2]) -> Option<[f64; 2]> {
        let h = &self.0;
        let w = h[2][0] * p[0] + h[2][1] * p[1] + h[2][2];
        if w.abs() < 1e-12 {
            return None;
        }
        Some([
            (h[0][0] * p[0] + h[0][1] * p[1] + h[0][2]) / w,
            (h[1][0] * p[0] + h[1][1] * p[1] + h[1][2]) / w,
        ])
    }

    /// The least-squares homography taking `from` to `to`; `None` for degenerate points
    /// (coincident, collinear) or non-finite input.
    pub fn fit(from: &[[f32; 2]], to: &[[f32; 2]]) -> Option<Self> {
        if from.len() != to.len() || from.len() < 4 {
            return None;
        }
        let na = normaliser(from)?;
        let nb = normaliser(to)?;
        // Normal equations of the 2n x 8 system A h = b.
        let mut ata = [[0.0f64; 8]; 8];
        let mut atb = [0.0f64; 8];
        for (p, q) in from.iter().zip(to) {
            let [x, y] = transform(&na, p);
            let [u, v] = transform(&nb, q);
            let rows = [
                ([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y], u),
                ([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y], v),
            ];
            for (row, rhs) in rows {
                for i in 0..8 {
                    atb[i] += row[i] * rhs;
                    for j in 0..8 {
                        ata[i][j] += row[i] * row[j];
                    }
                }
            }
        }
        let h = solve8(ata, atb)?;
        let hn = [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], 1.0]];
        // Undo the normalisations: H = Tb^-1 * Hn * Ta.
        let h = mul(&mul(&inverse_similarity(&nb), &hn), &na);
        let h = Homography(h);
        h.0.iter().flatten().all(|v| v.is_finite()).then_some(h)
    }
}

/// The RMS reprojection error of the best homography from `reference` to `points`, in
/// units of `scale` (an inter-ocular distance of `points`); `None` when it cannot be
/// fitted.
pub fn homography_residual(reference: &[[f32; 2]], points: &[[f32; 2]], scale: f32) -> Option<f32> {
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let h = Homography::fit(reference, points)?;
    let mut sum = 0.0;
    for (p, q) in reference.iter().zip(points) {
        let m = h.apply([f64::from(p[0]), f64::from(p[1])])?;
        sum += (m[0] - f64::from(q[0])).powi(2) + (m[1] - f64::from(q[1])).powi(2);
    }
    let r = ((sum / points.len() as f64).sqrt() / f64::from(scale)) as f32;
    r.is_finite().then_some(r)
}

/// Points [`trimmed_homography_residual`] leaves out: the worst fitted, one at a time.
pub(crate) const TRIMMED_POINTS: usize = 2;

/// [`homography_residual`] of the points left when the worst fitted is dropped and the
/// homography fitted again, `TRIMMED_POINTS` times: a point or two off the plane (a
/// tracker slipped onto a screen's moire fringe) make a photo look like a head, while a
/// head's parallax is in most points. `None` unless five points are left (five
/// over-determine a homography by one point) or with more than 32 points.
pub fn trimmed_homography_residual(
    reference: &[[f32; 2]],
    points: &[[f32; 2]],
    scale: f32,
) -> Option<f32> {
    /// Most points trimmed at once (the fixed buffers' size).
    const MAX_POINTS: usize = 32;
    let n = points.len();
    if !(5 + TRIMMED_POINTS..=MAX_POINTS).contains(&n) || reference.len() != n {
        return None;
    }
    let mut from = [[0.0f32; 2]; MAX_POINTS];
    let mut to = [[0.0f32; 2]; MAX_POINTS];
    from[..n].copy_from_slice(reference);
    to[..n].copy_from_slice(points);
    let mut k = n;
    for _ in 0..TRIMMED_POINTS {
        let h = Homography::fit(&from[..k], &to[..k])?;
        let mut worst = (0usize, -1.0f64);
        for (i, (p, q)) in from[..k].iter().zip(&to[..k]).enumerate() {
            let m = h.apply([f64::from(p[0]), f64::from(p[1])])?;
            let e = (m[0] - f64::from(q[0])).powi(2) + (m[1] - f64::from(q[1])).powi(2);
            if e > worst.1 {
                worst = (i, e);
            }
        }
        // Keeps the order of the others (the fit does not depend on it; the tests read
        // more easily).
        from.copy_within(worst.0 + 1..k, worst.0);
        to.copy_within(worst.0 + 1..k, worst.0);
        k -= 1;
    }
    homography_residual(&from[..k], &to[..k], scale)
}

/// Hartley's normalisation of `points` as a similarity matrix; `None` when the points
/// are not spread (or not finite).
fn normaliser(points: &[[f32; 2]]) -> Option<[[f64; 3]; 3]> {
    let n = points.len() as f64;
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return None;
    }
    let cx = points.iter().map(|p| f64::from(p[0])).sum::<f64>() / n;
    let cy = points.iter().map(|p| f64::from(p[1])).sum::<f64>() / n;
    let mean = points
        .iter()
        .map(|p| ((f64::from(p[0]) - cx).powi(2) + (f64::from(p[1]) - cy).powi(2)).sqrt())
        .sum::<f64>()
        / n;
    if mean < 1e-6 {
        return None;
    }
    let s = std::f64::consts::SQRT_2 / mean;
    Some([[s, 0.0, -s * cx], [0.0, s, -s * cy], [0.0, 0.0, 1.0]])
}

fn transform(t: &[[f64; 3]; 3], p: &[f32; 2]) -> [f64; 2] {
    let (x, y) = (f64::from(p[0]), f64::from(p[1]));
    [t[0][0] * x + t[0][2], t[1][1] * y + t[1][2]]
}

fn inverse_similarity(t: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let s = t[0][0];
    [
        [1.0 / s, 0.0, -t[0][2] / s],
        [0.0, 1.0 / s, -t[1][2] / s],
        [0.0, 0.0, 1.0],
    ]
}

fn mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// Solves `a x = b` (8 x 8) by Gaussian elimination with partial pivoting; `None` when
/// singular.
fn solve8(mut a: [[f64; 8]; 8], mut b: [f64; 8]) -> Option<[f64; 8]> {
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 * scale {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (done, rest) = a.split_at_mut(col + 1);
        let pivot_row = &done[col];
        for (offset, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = [0.0f64; 8];
    for row in (0..8).rev() {
        let s: f64 = (row + 1..8).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}
