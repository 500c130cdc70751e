//! Periods, window boundaries and the admission rule shared by the local and Redis policies.

/// A rate-limiting period, in Kong's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
    /// One calendar month (UTC); 30 days in sliding mode.
    Month,
    /// One calendar year (UTC); 365 days in sliding mode.
    Year,
}

impl Period {
    /// All periods, shortest first.
    pub const ALL: [Period; 6] = [
        Period::Second,
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Month,
        Period::Year,
    ];

    /// Config field name.
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// Capitalised, as in `X-RateLimit-Limit-Minute`.
    pub fn title(self) -> &'static str {
        match self {
            Period::Second => "Second",
            Period::Minute => "Minute",
            Period::Hour => "Hour",
            Period::Day => "Day",
            Period::Month => "Month",
            Period::Year => "Year",
        }
    }

    /// Kong's `EXPIRATION` table: the nominal length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    /// Index in [`Period::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Start (ms since the epoch) of the fixed window holding `now_ms`: UTC calendar
    /// boundaries, like Kong's `get_timestamps`.
    pub fn fixed_start(self, now_ms: i64) -> i64 {
        let secs = now_ms.div_euclid(1000);
        let start = match self {
            Period::Second => secs,
            Period::Minute => secs - secs.rem_euclid(60),
            Period::Hour => secs - secs.rem_euclid(3600),
            Period::Day => secs - secs.rem_euclid(86_400),
            Period::Month | Period::Year => {
                let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
                let m = if self == Period::Year { 1 } else { m };
                days_from_civil(y, m, 1) * 86_400
            }
        };
        start * 1000
    }

    /// Start of the sliding-mode window holding `now_ms`: fixed-length windows aligned on the
    /// epoch, so the previous window is always `start - length`.
    pub fn sliding_start(self, now_ms: i64) -> i64 {
        let len = self.seconds() * 1000;
        now_ms - now_ms.rem_euclid(len)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// What a store saw for one period, before this request was counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// The period.
    pub period: Period,
    /// Its limit.
    pub limit: u64,
    /// Requests counted in the current window.
    pub current: u64,
    /// Requests counted in the previous window (sliding mode; 0 otherwise).
    pub previous: u64,
    /// Share of the previous window still inside the sliding window (0 in fixed mode).
    pub weight: f64,
}

impl Observed {
    /// The requests the window holds now: exact in fixed mode, the weighted estimate
    /// `current + previous × weight` in sliding mode.
    pub fn estimate(&self) -> f64 {
        self.current as f64 + self.previous as f64 * self.weight
    }

    /// Does this period admit one more request?
    pub fn admits(&self) -> bool {
        self.estimate() + 1.0 <= self.limit as f64
    }

    /// Usage as Kong reports it (whole requests, rounded up in sliding mode).
    pub fn usage(&self) -> u64 {
        let e = self.estimate();
        // Guard against 4.000000001 becoming 5 from float noise.
        (e - 1e-9).ceil().max(0.0) as u64
    }
}

/// The share of the previous window that a sliding window starting `now - len` still covers.
pub fn sliding_weight(now_ms: i64, start_ms: i64, len_ms: i64) -> f64 {
    let elapsed = (now_ms - start_ms).clamp(0, len_ms);
    (len_ms - elapsed) as f64 / len_ms as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_boundaries_are_utc() {
        // 2024-02-29T13:45:30.250Z
        let now = 1_709_214_330_250;
        assert_eq!(Period::Second.fixed_start(now), 1_709_214_330_000);
        assert_eq!(Period::Minute.fixed_start(now), 1_709_214_300_000);
        assert_eq!(Period::Hour.fixed_start(now), 1_709_211_600_000);
        assert_eq!(Period::Day.fixed_start(now), 1_709_164_800_000);
        // 2024-02-01T00:00:00Z and 2024-01-01T00:00:00Z
        assert_eq!(Period::Month.fixed_start(now), 1_706_745_600_000);
        assert_eq!(Period::Year.fixed_start(now), 1_704_067_200_000);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-800_000, -1, 0, 59, 365, 11_016, 19_782, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn sliding_windows_are_epoch_aligned() {
        assert_eq!(Period::Minute.sliding_start(125_000), 120_000);
        assert_eq!(sliding_weight(125_000, 120_000, 60_000), 55.0 / 60.0);
        assert_eq!(sliding_weight(120_000, 120_000, 60_000), 1.0);
    }

    #[test]
    fn admission_and_usage() {
        let fixed = |current| Observed {
            period: Period::Minute,
            limit: 5,
            current,
            previous: 0,
            weight: 0.0,
        };
        assert!(fixed(4).admits());
        assert!(!fixed(5).admits());
        assert_eq!(fixed(4).usage(), 4);
        let sliding = Observed {
            period: Period::Second,
            limit: 5,
            current: 0,
            previous: 5,
            weight: 0.95,
        };
        // Just after a boundary the previous window still weighs 4.75 requests.
        assert!(!sliding.admits());
        assert_eq!(sliding.usage(), 5);
        let later = Observed {
            weight: 0.5,
            ..sliding
        };
        assert!(later.admits());
        assert_eq!(later.usage(), 3);
    }
}
