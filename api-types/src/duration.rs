//! The duration format of every flag and config file: `3s`, `500ms`, `1.5s`, a bare number of seconds, or any
//! humantime form (`1m 30s`, `2min`, `1h`). Shown back as `3s` or `1500ms`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest duration accepted: a day. Nothing we configure (intervals, timeouts, grace periods) is longer, and a
/// bound keeps a typo like `3000000` from parking a timer for a month.
pub const MAX: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration {0:?}: expected e.g. 3s, 500ms, 1.5s, 1m 30s or a number of seconds, at most a day")]
pub struct DurationError(pub String);

/// A duration as an operator writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

impl FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DurationError(s.to_string());
        let t = s.trim();
        // The forms lbd always took (a decimal number, optionally with s or ms); humantime has no fractions.
        let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
            (n, 0.001)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1.0)
        } else {
            (t, 1.0)
        };
        let d = match num.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= MAX.as_secs_f64() => {
                Duration::from_micros((v * scale * 1e6).round() as u64)
            }
            Ok(_) => return Err(bad()),
            Err(_) => humantime::parse_duration(t).map_err(|_| bad())?,
        };
        if d > MAX {
            return Err(bad());
        }
        Ok(Dur(d))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // TOML and JSON give numbers as numbers: `interval = 2` and `timeout = 0.25` mean seconds.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(i) => i.to_string(),
            Raw::Float(x) => x.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_old_forms_and_humantime() {
        for (text, ms) in [
            ("3s", 3000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("2", 2000),
            (" 250 ms", 250),
            ("0.25", 250),
            ("1m 30s", 90_000),
            ("2min", 120_000),
            ("1h", 3_600_000),
            ("0s", 0),
        ] {
            assert_eq!(text.parse::<Dur>().unwrap().0.as_millis(), ms, "{text}");
        }
    }

    #[test]
    fn refuses_nonsense_negative_and_huge() {
        for text in ["soon", "", "-1s", "NaN", "inf", "1.5.5s", "86401", "2d", "3 parsecs"] {
            let e = text.parse::<Dur>().unwrap_err().to_string();
            assert!(e.contains("bad duration") && e.contains(&format!("{text:?}")), "{text}: {e}");
        }
    }

    #[test]
    fn shows_seconds_or_milliseconds_and_round_trips() {
        assert_eq!(Dur::millis(1500).to_string(), "1500ms");
        assert_eq!(Dur::secs(3).to_string(), "3s");
        for d in [Dur::millis(1500), Dur::secs(3), Dur::millis(50)] {
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d);
        }
    }

    #[test]
    fn serde_takes_strings_and_numbers() {
        #[derive(Debug, Deserialize, Serialize)]
        struct T {
            a: Dur,
            b: Dur,
            c: Dur,
        }
        let t: T = serde_json::from_str(r#"{"a":"500ms","b":2,"c":0.25}"#).unwrap();
        assert_eq!((t.a, t.b, t.c), (Dur::millis(500), Dur::secs(2), Dur::millis(250)));
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":"500ms","b":"2s","c":"250ms"}"#);
        assert!(serde_json::from_str::<T>(r#"{"a":"x","b":1,"c":1}"#)
            .unwrap_err()
            .to_string()
            .contains("bad duration"));
    }
}
