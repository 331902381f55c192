//! Capture time. Every timing rule (500 ms between fragments, 1000 ms to answer)
//! is measured on timestamps taken from the capture, never on the wall clock, so
//! the protocol core only ever sees this type.

use core::fmt;
use core::ops::Sub;

/// A point in capture time: nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Builds a timestamp from seconds and nanoseconds.
    pub const fn from_parts(secs: i64, nanos: u32) -> Self {
        Timestamp(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(nanos as i64),
        )
    }

    /// Builds a timestamp from milliseconds since the epoch (handy in tests).
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Seconds since the epoch as a float, as written in JSON output.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// The time from `earlier` to `self` in milliseconds (negative if `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> f64 {
        (self.0.saturating_sub(earlier.0)) as f64 / 1e6
    }

    /// This time plus `ms` milliseconds.
    pub const fn add_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms.saturating_mul(1_000_000)))
    }
}

impl Sub for Timestamp {
    type Output = i64;
    /// The difference in nanoseconds.
    fn sub(self, rhs: Timestamp) -> i64 {
        self.0.saturating_sub(rhs.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000);
        write!(f, "{secs}.{:06}", nanos / 1000)
    }
}
