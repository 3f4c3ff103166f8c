//! The statistics the evaluation reports: exact (Clopper-Pearson) binomial bounds, and
//! seeded bootstrap intervals.
//!
//! A rate measured on a labelled set says little about the next thousand customers unless
//! it comes with a bound. For "under-18s allowed" the bound is what an operator can
//! promise: with x of n minors allowed, the one-sided 95 % Clopper-Pearson upper bound is
//! the rate that would show x or fewer in n only 5 % of the time. With none allowed it is
//! `1 - 0.05^(1/n)`: 382 minors bound the rate at 0.0078, about 3,000 are needed for
//! 0.001.

/// The regularised incomplete beta function `I_x(a, b)` (continued fraction, Numerical
/// Recipes' `betacf`), for `a, b > 0`, `0 <= x <= 1`.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    // I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-12 {
            break;
        }
    }
    h
}

/// `ln Gamma(x)` for `x > 0` (Lanczos, g = 7, n = 9: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The `p`-quantile of Beta(a, b), by bisection on [`incomplete_beta`] (monotone in x).
fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if incomplete_beta(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The two-sided 95 % Clopper-Pearson interval of a rate `x / n`.
pub fn clopper_pearson(x: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 || x > n {
        return None;
    }
    let (xf, nf) = (x as f64, n as f64);
    let lower = if x == 0 {
        0.0
    } else {
        beta_quantile(0.025, xf, nf - xf + 1.0)
    };
    let upper = if x == n {
        1.0
    } else {
        beta_quantile(0.975, xf + 1.0, nf - xf)
    };
    Some((lower, upper))
}

/// The one-sided 95 % Clopper-Pearson upper bound of a rate `x / n`: what a calibration
/// promises.
pub fn upper_bound(x: usize, n: usize) -> Option<f64> {
    if n == 0 || x > n {
        return None;
    }
    let (xf, nf) = (x as f64, n as f64);
    Some(if x == n {
        1.0
    } else {
        beta_quantile(0.95, xf + 1.0, nf - xf)
    })
}

/// How many cases, none of them a hit, bound a rate at `eps` (one-sided 95 %):
/// `1 - 0.05^(1/n) <= eps`.
pub fn needed_for(eps: f64) -> Option<usize> {
    if !(eps > 0.0 && eps < 1.0) {
        return None;
    }
    Some((0.05f64.ln() / (1.0 - eps).ln()).ceil() as usize)
}

/// xorshift64*: the bootstrap's resampling, seeded so a report is reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Resamples drawn by [`bootstrap`].
pub const RESAMPLES: usize = 1_000;

/// The 95 % percentile bootstrap interval of `statistic` over `units` (resampled with
/// replacement, [`RESAMPLES`] times, seeded): the units are the images, or the subjects
/// when a manifest names them (images of one person are not independent). `None` when the
/// statistic is undefined on too many resamples.
pub fn bootstrap<U>(
    units: &[U],
    seed: u64,
    statistic: impl Fn(&[&U]) -> Option<f64>,
) -> Option<(f64, f64)> {
    if units.is_empty() {
        return None;
    }
    let mut rng = Rng::new(seed);
    let mut draws = Vec::with_capacity(RESAMPLES);
    let mut sample: Vec<&U> = Vec::with_capacity(units.len());
    for _ in 0..RESAMPLES {
        sample.clear();
        sample.extend((0..units.len()).map(|_| &units[rng.below(units.len())]));
        if let Some(v) = statistic(&sample) {
            draws.push(v);
        }
    }
    if draws.len() < RESAMPLES / 2 {
        return None;
    }
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((draws.len() - 1) as f64 * q).round() as usize];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn beta_functions_match_closed_forms() {
        // I_x(1, b) = 1 - (1 - x)^b and I_x(a, 1) = x^a.
        for &(x, b) in &[(0.1, 3.0), (0.5, 7.0), (0.9, 2.0)] {
            assert!(close(
                incomplete_beta(x, 1.0, b),
                1.0 - (1.0f64 - x).powf(b),
                1e-10
            ));
            assert!(close(incomplete_beta(x, b, 1.0), x.powf(b), 1e-10));
        }
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
    }

    #[test]
    fn clopper_pearson_by_hand() {
        // None of n: the upper bound solves (1 - p)^n = alpha.
        let (lo, hi) = clopper_pearson(0, 382).unwrap();
        assert_eq!(lo, 0.0);
        assert!(close(hi, 1.0 - 0.025f64.powf(1.0 / 382.0), 1e-9), "{hi}");
        assert!(close(
            upper_bound(0, 382).unwrap(),
            1.0 - 0.05f64.powf(1.0 / 382.0),
            1e-9
        ));
        assert!(close(upper_bound(0, 382).unwrap(), 0.0078, 1e-4));
        // All of n: the lower bound solves p^n = alpha.
        let (lo, hi) = clopper_pearson(10, 10).unwrap();
        assert!(close(lo, 0.025f64.powf(0.1), 1e-9) && hi == 1.0);
        // 5 of 100: the textbook interval 0.0164 .. 0.1128.
        let (lo, hi) = clopper_pearson(5, 100).unwrap();
        assert!(
            close(lo, 0.016431, 1e-5) && close(hi, 0.112835, 1e-5),
            "{lo} {hi}"
        );
        assert_eq!(clopper_pearson(1, 0), None);
        assert_eq!(upper_bound(3, 2), None);
    }

    #[test]
    fn minors_needed_for_a_bound() {
        // The figures: about 3,000 for 0.001 with none allowed; 382 reach 0.008.
        assert_eq!(needed_for(0.001), Some(2995));
        assert!(needed_for(0.008).unwrap() <= 382);
        assert!(needed_for(0.0078).unwrap() > 382);
        assert_eq!(needed_for(0.0), None);
    }

    #[test]
    fn bootstrap_brackets_the_mean_and_is_seeded() {
        let units: Vec<f64> = (0..200).map(|i| f64::from(i % 10)).collect();
        let mean = |s: &[&f64]| Some(s.iter().copied().sum::<f64>() / s.len() as f64);
        let (lo, hi) = bootstrap(&units, 7, mean).unwrap();
        assert!(lo < 4.5 && 4.5 < hi && hi - lo < 1.5, "{lo} {hi}");
        assert_eq!(bootstrap(&units, 7, mean), bootstrap(&units, 7, mean));
        assert_ne!(bootstrap(&units, 7, mean), bootstrap(&units, 8, mean));
        assert_eq!(bootstrap(&[] as &[f64], 7, mean), None);
    }
}
