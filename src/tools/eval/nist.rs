//! NIST FATE age-estimation figures (FATE AEV's report, our reading): the headline MAE
//! (the mean of the MAEs of the sex x age cells 18 to 30, so every cell weighs the same
//! whatever its size), the share within 1 to 10 years, and the challenge table: for each
//! threshold T from 18 to 35, the share of under-18s estimated at T or over (the minors a
//! "challenge T" gate lets through), with its Clopper-Pearson interval, and the shares of
//! adults 25+ and 18-24 it would challenge. `t_star` is the smallest T whose one-sided
//! 95 % upper bound on that share meets a target, or, when the set is too small to show
//! it, how many minors it would take. The same table per sex and per race when the
//! manifest has them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::report::{abs_err, mean, share};
use super::Estimated;
use crate::tools::manifest::Entry;
use crate::tools::stats::{bootstrap, clopper_pearson, needed_for, upper_bound};

/// The thresholds of the challenge table.
pub const THRESHOLDS: std::ops::RangeInclusive<u8> = 18..=35;
/// The targets `t_star` is reported for.
pub const TARGETS: [f64; 3] = [0.01, 0.002, 0.001];

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct ChallengeRow {
    pub threshold: u8,
    pub minors: usize,
    /// Under-18s estimated at the threshold or over.
    pub minors_over: usize,
    pub minor_fpr: Option<f64>,
    /// Two-sided 95 % Clopper-Pearson interval of `minor_fpr`.
    pub minor_fpr_ci: Option<(f64, f64)>,
    /// One-sided 95 % upper bound of `minor_fpr` (what `t_star` and calibration use).
    pub minor_fpr_upper: Option<f64>,
    pub adults: usize,
    /// Adults 25+ estimated under the threshold (challenged: asked for ID).
    pub adult_challenge_rate: Option<f64>,
    pub young_adults: usize,
    /// 18-24 estimated under the threshold.
    pub young_adult_challenge_rate: Option<f64>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct TStar {
    /// The smallest threshold whose upper bound meets the target, if one does.
    pub threshold: Option<u8>,
    /// When none does: the minors a set needs to show the target with none over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minors_needed: Option<usize>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Challenge {
    pub rows: Vec<ChallengeRow>,
    /// Keyed by target ("0.01", "0.002", "0.001").
    pub t_star: BTreeMap<String, TStar>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Nist {
    pub headline_mae: Option<f64>,
    /// Sex x age cells (18..=30) that have data.
    pub headline_cells: usize,
    pub headline_mae_ci: Option<(f64, f64)>,
    /// Share of estimates within k years, k = 1..=10 (keyed "1".."10").
    pub acc: BTreeMap<String, f64>,
    pub challenge: Challenge,
    pub by_sex: BTreeMap<String, Challenge>,
    pub by_race: BTreeMap<String, Challenge>,
}

type Row<'a> = (&'a Entry, &'a Estimated);

/// The headline MAE and its cell count: cells are (sex, whole years of age) for true ages
/// 18 to 30; a row without a sex is its own sex, "unknown".
fn headline<'a>(rows: impl Iterator<Item = &'a Row<'a>>) -> (Option<f64>, usize) {
    let mut cells: BTreeMap<(String, u32), Vec<f64>> = BTreeMap::new();
    for (entry, e) in rows {
        if (18.0..31.0).contains(&entry.age) {
            let sex = entry.gender.clone().unwrap_or_else(|| "unknown".into());
            cells
                .entry((sex, entry.age.floor() as u32))
                .or_default()
                .push(abs_err(entry, e));
        }
    }
    let maes: Vec<f64> = cells
        .values()
        .filter_map(|v| mean(v.iter().copied()))
        .collect();
    (mean(maes.iter().copied()), maes.len())
}

fn challenge(rows: &[Row]) -> Challenge {
    let ages = |lo: f32, hi: f32| -> Vec<f32> {
        rows.iter()
            .filter(|(en, _)| en.age >= lo && en.age < hi)
            .map(|(_, e)| e.estimate.age)
            .collect()
    };
    let (minors, young, adults) = (ages(0.0, 18.0), ages(18.0, 25.0), ages(25.0, f32::INFINITY));
    let rows: Vec<ChallengeRow> = THRESHOLDS
        .map(|t| {
            let over = minors.iter().filter(|&&a| a >= f32::from(t)).count();
            let under = |set: &[f32]| set.iter().filter(|&&a| a < f32::from(t)).count();
            ChallengeRow {
                threshold: t,
                minors: minors.len(),
                minors_over: over,
                minor_fpr: share(over, minors.len()),
                minor_fpr_ci: clopper_pearson(over, minors.len()),
                minor_fpr_upper: upper_bound(over, minors.len()),
                adults: adults.len(),
                adult_challenge_rate: share(under(&adults), adults.len()),
                young_adults: young.len(),
                young_adult_challenge_rate: share(under(&young), young.len()),
            }
        })
        .collect();
    let t_star = TARGETS
        .iter()
        .map(|&eps| {
            let threshold = rows
                .iter()
                .find(|r| r.minor_fpr_upper.is_some_and(|u| u <= eps))
                .map(|r| r.threshold);
            let star = TStar {
                threshold,
                minors_needed: threshold.is_none().then(|| needed_for(eps)).flatten(),
            };
            (format!("{eps}"), star)
        })
        .collect();
    Challenge { rows, t_star }
}

fn by_column(rows: &[Row], get: fn(&Entry) -> Option<&String>) -> BTreeMap<String, Challenge> {
    let mut groups: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for &(entry, e) in rows {
        if let Some(v) = get(entry) {
            groups.entry(v.clone()).or_default().push((entry, e));
        }
    }
    groups
        .iter()
        .map(|(k, r)| (k.clone(), challenge(r)))
        .collect()
}

impl Nist {
    /// The figures over `rows` (the rows with an estimate); `units` are the bootstrap's
    /// resampling units (rows, or one subject's rows together).
    pub fn of(rows: &[Row], units: &[Vec<Row>]) -> Self {
        let (headline_mae, headline_cells) = headline(rows.iter());
        let headline_mae_ci = bootstrap(units, 0x4EAD, |sample| {
            headline(sample.iter().flat_map(|u| u.iter())).0
        });
        let acc = (1..=10)
            .filter_map(|k| {
                let within = rows
                    .iter()
                    .filter(|(en, e)| abs_err(en, e) <= f64::from(k))
                    .count();
                share(within, rows.len()).map(|s| (k.to_string(), s))
            })
            .collect();
        Self {
            headline_mae,
            headline_cells,
            headline_mae_ci,
            acc,
            challenge: challenge(rows),
            by_sex: by_column(rows, |e| e.gender.as_ref()),
            by_race: by_column(rows, |e| e.race.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(age: f32, gender: Option<&str>) -> Entry {
        Entry {
            rel_path: format!("{age}.jpg"),
            path: format!("/x/{age}.jpg").into(),
            age,
            gender: gender.map(str::to_string),
            race: None,
            subject: None,
        }
    }

    fn estimated(age: f32) -> Estimated {
        Estimated::made_up(age, 3.0)
    }

    #[test]
    fn figures_computed_by_hand() {
        // Truth -> estimate. Minors: 10 -> 12, 15 -> 19, 16 -> 26, 17 -> 17.
        // Young adults: 20 (f) -> 22, 20 (m) -> 18. Adults: 30 (f) -> 27, 40 -> 45.
        let data = [
            (10.0, 12.0, None),
            (15.0, 19.0, None),
            (16.0, 26.0, None),
            (17.0, 17.0, None),
            (20.0, 22.0, Some("1")),
            (20.0, 18.0, Some("0")),
            (30.0, 27.0, Some("1")),
            (40.0, 45.0, Some("0")),
        ];
        let entries: Vec<Entry> = data.iter().map(|&(t, _, g)| entry(t, g)).collect();
        let ests: Vec<Estimated> = data.iter().map(|&(_, e, _)| estimated(e)).collect();
        let rows: Vec<Row> = entries.iter().zip(&ests).collect();
        let units: Vec<Vec<Row>> = rows.iter().map(|r| vec![*r]).collect();
        let nist = Nist::of(&rows, &units);
        // Cells 18..=30: (f, 20) err 2, (m, 20) err 2, (f, 30) err 3; (m, 40) is out.
        assert_eq!(nist.headline_cells, 3);
        assert!((nist.headline_mae.unwrap() - 7.0 / 3.0).abs() < 1e-9);
        // Errors 2, 4, 10, 0, 2, 2, 3, 5: within 2 years: 4 of 8, within 5: 7 of 8.
        assert_eq!(nist.acc["2"], 0.5);
        assert_eq!(nist.acc["5"], 0.875);
        assert_eq!(nist.acc["10"], 1.0);
        let row = |t: u8| {
            nist.challenge
                .rows
                .iter()
                .find(|r| r.threshold == t)
                .unwrap()
                .clone()
        };
        // T = 18: minors estimated 18 or over: 19 and 26, 2 of 4.
        let r18 = row(18);
        assert_eq!((r18.minors, r18.minors_over), (4, 2));
        assert_eq!(r18.minor_fpr, Some(0.5));
        // Adults 25+ under 18: none; 18-24 under 18: none (18 is not under 18).
        assert_eq!(r18.adult_challenge_rate, Some(0.0));
        assert_eq!(r18.young_adult_challenge_rate, Some(0.0));
        // T = 25: minors over: 26 only; adults under 25: none (27, 45); young: both.
        let r25 = row(25);
        assert_eq!(r25.minors_over, 1);
        assert_eq!(r25.young_adult_challenge_rate, Some(1.0));
        // T = 30: adults under 30: 27, one of two.
        assert_eq!(row(30).adult_challenge_rate, Some(0.5));
        // Clopper-Pearson for 1 of 4: [1 - 0.975^(1/4), 1 - 0.025^(1/4)] at the ends
        // x = 1, n = 4 lower solves I_p(1, 4) = 0.025: 1 - (1 - p)^4 = 0.025.
        let (lo, _) = r25.minor_fpr_ci.unwrap();
        assert!((lo - (1.0 - 0.975f64.powf(0.25))).abs() < 1e-9, "{lo}");
        // T = 27: no minor over, upper bound 1 - 0.05^(1/4) = 0.527: four minors bound
        // nothing useful, so no t_star and the minors it would take.
        assert_eq!(row(27).minors_over, 0);
        assert!((row(27).minor_fpr_upper.unwrap() - (1.0 - 0.05f64.powf(0.25))).abs() < 1e-9);
        let star = &nist.challenge.t_star["0.01"];
        assert_eq!(star.threshold, None);
        assert_eq!(star.minors_needed, Some(299));
        // By sex: only the rows that have one; an empty cell (no minors) has no rate.
        let f = &nist.by_sex["1"];
        assert_eq!(f.rows[0].minors, 0);
        assert_eq!(f.rows[0].minor_fpr, None);
        assert_eq!(f.rows[0].minor_fpr_ci, None);
        assert!(nist.by_race.is_empty());
    }
}
