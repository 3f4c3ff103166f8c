//! The gate's vocabulary, one definition each: the verdicts, why a verdict is REFER, the
//! age bands (names and cut points, the same for the eval's report, the audit log and the
//! serial line) and the confidence figure a DECISION carries. Every stage and tool that
//! speaks of these uses this module; none defines its own.

/// The gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Decision {
    Allow,
    Deny,
    Refer,
}

impl Decision {
    /// `ALLOW`, `DENY` or `REFER`, as every report and log spells it.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
            Decision::Refer => "REFER",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a decision is REFER: in the event log, the audit log and the eval's per-image CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferReason {
    /// The estimate's margin straddles the thresholds: too close to call.
    Uncertain,
    /// The window timed out without a face.
    NoFace,
    /// The window timed out with too few frames of one person.
    Timeout,
    /// The window timed out: the face was there, but too small, turned, blurred or badly
    /// exposed to count (`[quality]`).
    LowQuality,
    /// Another face was in view (`[session] other_faces = "refer"`).
    OtherFaces,
    /// An estimate the gate cannot read (non-finite: a bug upstream).
    Unreadable,
    /// A fault answered the request (camera, model, relay, internal).
    Fault,
    /// The host replaced the request with a new one.
    Replaced,
    /// The device is shutting down.
    Shutdown,
    /// The request asked for less than the board's floor (`[policy] min_request_age`).
    Refused,
    /// The face looked presented, not present (a photo or a screen held up: `[liveness]`).
    /// Never DENY: a real adult wrongly flagged must be able to try again or ask staff.
    Liveness,
}

impl ReferReason {
    /// Every reason, in wire-code order (code = index + 1).
    pub const ALL: [ReferReason; 11] = [
        Self::Uncertain,
        Self::NoFace,
        Self::Timeout,
        Self::LowQuality,
        Self::OtherFaces,
        Self::Unreadable,
        Self::Fault,
        Self::Replaced,
        Self::Shutdown,
        Self::Refused,
        Self::Liveness,
    ];

    /// The reason's byte on the serial line (REASON message, `docs/serial-protocol.md`).
    /// The codes are fixed by the protocol: a new reason takes the next free code.
    pub fn code(self) -> u8 {
        match self {
            Self::Uncertain => 1,
            Self::NoFace => 2,
            Self::Timeout => 3,
            Self::LowQuality => 4,
            Self::OtherFaces => 5,
            Self::Unreadable => 6,
            Self::Fault => 7,
            Self::Replaced => 8,
            Self::Shutdown => 9,
            Self::Refused => 10,
            Self::Liveness => 11,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Uncertain => "uncertain",
            Self::NoFace => "no_face",
            Self::Timeout => "timeout",
            Self::LowQuality => "low_quality",
            Self::OtherFaces => "other_faces",
            Self::Unreadable => "unreadable",
            Self::Fault => "fault",
            Self::Replaced => "replaced",
            Self::Shutdown => "shutdown",
            Self::Refused => "refused",
            Self::Liveness => "liveness",
        }
    }
}

impl std::fmt::Display for ReferReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An age band: what a DECISION reports (its index on the wire), what the audit log
/// records, and how `agegate eval` groups true ages. Bands, not years, leave the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum AgeBand {
    /// 0–12
    Under13 = 0,
    /// 13–17
    From13To17 = 1,
    /// 18–24
    From18To24 = 2,
    /// 25–34
    From25To34 = 3,
    /// 35–49
    From35To49 = 4,
    /// 50 and over
    From50 = 5,
}

impl AgeBand {
    /// Every band, youngest first (wire order).
    pub const ALL: [AgeBand; 6] = [
        AgeBand::Under13,
        AgeBand::From13To17,
        AgeBand::From18To24,
        AgeBand::From25To34,
        AgeBand::From35To49,
        AgeBand::From50,
    ];

    /// The band's name in reports and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Under13 => "0-12",
            Self::From13To17 => "13-17",
            Self::From18To24 => "18-24",
            Self::From25To34 => "25-34",
            Self::From35To49 => "35-49",
            Self::From50 => "50+",
        }
    }

    /// The youngest age in the band, years.
    pub fn lowest(self) -> f32 {
        match self {
            Self::Under13 => 0.0,
            Self::From13To17 => 13.0,
            Self::From18To24 => 18.0,
            Self::From25To34 => 25.0,
            Self::From35To49 => 35.0,
            Self::From50 => 50.0,
        }
    }

    /// The first age above the band (infinite for 50+).
    pub fn above(self) -> f32 {
        Self::ALL
            .get(self as usize + 1)
            .map_or(f32::INFINITY, |next| next.lowest())
    }

    /// The band on the wire.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    /// The band an age (years) falls in; `None` for a non-finite or negative age, which has
    /// no band.
    pub fn from_age(age: f32) -> Option<Self> {
        if !(age.is_finite() && age >= 0.0) {
            return None;
        }
        Self::ALL
            .into_iter()
            .rev()
            .find(|band| age >= band.lowest())
    }

    /// Whether `age` falls in this band.
    pub fn contains(self, age: f32) -> bool {
        age >= self.lowest() && age < self.above()
    }
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

/// A DECISION's confidence, percent: for ALLOW the probability (under a normal with the
/// window's age and sigma) that the person is at least `challenge_age`, for DENY that they
/// are under `legal_age`; REFER makes no claim and reports 0.
pub fn confidence(
    decision: Decision,
    age: f32,
    sigma: f32,
    legal_age: f32,
    challenge_age: f32,
) -> u8 {
    let sigma = f64::from(sigma.max(0.1));
    let p = match decision {
        Decision::Allow => normal_cdf(f64::from(age - challenge_age) / sigma),
        Decision::Deny => normal_cdf(f64::from(legal_age - age) / sigma),
        Decision::Refer => 0.0,
    };
    (p * 100.0).round().clamp(0.0, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cut_where_their_names_say() {
        let cuts = [
            (0.0, "0-12"),
            (12.99, "0-12"),
            (13.0, "13-17"),
            (17.9, "13-17"),
        ];
        for (age, name) in cuts {
            assert_eq!(
                AgeBand::from_age(age).map(AgeBand::name),
                Some(name),
                "{age}"
            );
        }
        for band in AgeBand::ALL {
            assert_eq!(AgeBand::from_age(band.lowest()), Some(band));
            assert!(band.contains(band.lowest()) && !band.contains(band.above()));
            assert_eq!(AgeBand::from_u8(band as u8), Some(band));
            // Names spell the cut points: "18-24" is 18 to below 25.
            let first: f32 = band
                .name()
                .split(['-', '+'])
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(first, band.lowest());
        }
        assert_eq!(AgeBand::from_age(120.0), Some(AgeBand::From50));
        assert_eq!(AgeBand::from_age(-1.0), None);
        assert_eq!(AgeBand::from_age(f32::NAN), None);
        assert_eq!(AgeBand::from_u8(6), None);
    }

    #[test]
    fn reasons_round_trip_their_codes() {
        for (i, r) in ReferReason::ALL.into_iter().enumerate() {
            assert_eq!(
                usize::from(r.code()),
                i + 1,
                "{r:?} out of code order in ALL"
            );
            assert_eq!(ReferReason::from_code(r.code()), Some(r));
        }
        assert_eq!(ReferReason::Uncertain.code(), 1);
        assert_eq!(ReferReason::from_code(0), None);
        assert_eq!(ReferReason::Liveness.code(), 11);
        assert_eq!(ReferReason::from_code(12), None);
    }

    #[test]
    fn confidence_is_the_probability_beyond_the_threshold() {
        let c = |d, age| confidence(d, age, 5.0, 18.0, 25.0);
        assert_eq!(c(Decision::Allow, 25.0), 50);
        assert_eq!(c(Decision::Allow, 35.0), 98);
        assert_eq!(c(Decision::Deny, 13.0), 84);
        assert_eq!(c(Decision::Refer, 20.0), 0);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-3);
    }
}
