//! The Nagios plugin format every check command of the project prints (`lbctl check`, and later the manager's and
//! relays' checks): states and exit codes, the `SERVICE STATE - text | perfdata` line, and threshold ranges.
//!
//! Follows the Monitoring Plugins development guidelines (the format Nagios, Icinga, Naemon and Shinken read):
//! exit 0/1/2/3 for OK/WARNING/CRITICAL/UNKNOWN, one status line on stdout, perfdata
//! `'label'=value[UOM];[warn];[crit];[min];[max]` separated by spaces, and ranges where `10` alerts outside 0..10,
//! `10:` below 10, `~:10` above 10, `10:20` outside 10..20 and `@10:20` inside 10..20 (ends inclusive).

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

/// A check's result, ordered from best to worst except UNKNOWN, which a monitoring system treats on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl State {
    /// The worse of two verdicts (OK < WARNING < CRITICAL); UNKNOWN stays UNKNOWN.
    pub fn max(self, other: State) -> State {
        let rank = |s: State| match s {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// The plugin's exit status.
    pub fn code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A threshold range that was written wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("empty threshold range: expected N, N:, ~:N, N:M or @N:M")]
    Empty,
    #[error("bad threshold range {range:?}: {part:?} is not a number (expected N, N:, ~:N, N:M or @N:M)")]
    NotANumber { range: String, part: String },
    #[error("bad threshold range {range:?}: its start is above its end")]
    StartAboveEnd { range: String },
}

/// A Nagios threshold range: alerts when a value is outside `start..=end`, or inside it when written with `@`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// `f64::NEG_INFINITY` for `~`.
    pub start: f64,
    /// `f64::INFINITY` when the range ends in `:`.
    pub end: f64,
    /// `@`: alert inside the range instead of outside.
    pub inside: bool,
}

impl Range {
    /// Alerts below `min` (`min:`): "fewer than min" thresholds such as usable reals.
    pub fn at_least(min: f64) -> Range {
        Range { start: min, end: f64::INFINITY, inside: false }
    }

    /// Alerts above `max` (`max`, i.e. `0:max`, or `~:max` for a negative max).
    pub fn at_most(max: f64) -> Range {
        Range { start: if max >= 0.0 { 0.0 } else { f64::NEG_INFINITY }, end: max, inside: false }
    }

    /// Whether `value` raises this threshold.
    pub fn alerts(&self, value: f64) -> bool {
        let within = self.start <= value && value <= self.end;
        if self.inside {
            within
        } else {
            !within
        }
    }
}

impl FromStr for Range {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, RangeError> {
        let range = s.trim();
        if range.is_empty() {
            return Err(RangeError::Empty);
        }
        let (inside, body) = match range.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, range),
        };
        let number = |part: &str| -> Result<f64, RangeError> {
            // f64's parser takes "inf" and "NaN", which are not range syntax.
            let ok = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
            match part.parse::<f64>() {
                Ok(v) if ok && v.is_finite() => Ok(v),
                _ => Err(RangeError::NotANumber { range: range.to_string(), part: part.to_string() }),
            }
        };
        let (start, end) = match body.split_once(':') {
            None => (0.0, number(body)?),
            Some((a, b)) => {
                let start = if a == "~" { f64::NEG_INFINITY } else { number(a)? };
                let end = if b.is_empty() { f64::INFINITY } else { number(b)? };
                (start, end)
            }
        };
        if start > end {
            return Err(RangeError::StartAboveEnd { range: range.to_string() });
        }
        Ok(Range { start, end, inside })
    }
}

impl fmt::Display for Range {
    /// The shortest form of the syntax, as perfdata's warn and crit fields carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        match (self.start, self.end) {
            (s, e) if s == 0.0 && e.is_finite() && !self.inside => write!(f, "{}", Num(e)),
            (s, e) if s == f64::NEG_INFINITY && e == f64::INFINITY => f.write_str("~:"),
            (s, e) if s == f64::NEG_INFINITY => write!(f, "~:{}", Num(e)),
            (s, e) if e == f64::INFINITY => write!(f, "{}:", Num(s)),
            (s, e) => write!(f, "{}:{}", Num(s), Num(e)),
        }
    }
}

/// A number as plugins print it: no exponent, no trailing `.0`, `U` when undetermined.
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_finite() {
            write!(f, "{}", self.0)
        } else {
            f.write_str("U")
        }
    }
}

/// Warning and critical ranges of one value; critical wins.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Thresholds {
    pub warning: Option<Range>,
    pub critical: Option<Range>,
}

impl Thresholds {
    /// The state `value` puts a check in.
    pub fn state(&self, value: f64) -> State {
        if self.critical.is_some_and(|r| r.alerts(value)) {
            State::Critical
        } else if self.warning.is_some_and(|r| r.alerts(value)) {
            State::Warning
        } else {
            State::Ok
        }
    }
}

/// A perfdata unit of measurement (the only ones the format knows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uom {
    /// A plain number.
    None,
    Seconds,
    Millis,
    Micros,
    Percent,
    Bytes,
    KiloBytes,
    MegaBytes,
    TeraBytes,
    /// A continuous counter (packets, bytes since start): graphers derive a rate from it.
    Counter,
}

impl Uom {
    pub fn as_str(self) -> &'static str {
        match self {
            Uom::None => "",
            Uom::Seconds => "s",
            Uom::Millis => "ms",
            Uom::Micros => "us",
            Uom::Percent => "%",
            Uom::Bytes => "B",
            Uom::KiloBytes => "KB",
            Uom::MegaBytes => "MB",
            Uom::TeraBytes => "TB",
            Uom::Counter => "c",
        }
    }
}

/// One perfdata item: `'label'=value[UOM];[warn];[crit];[min];[max]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Perf {
    pub label: String,
    pub value: f64,
    pub uom: Uom,
    pub thresholds: Thresholds,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Perf {
    pub fn new(label: impl Into<String>, value: f64, uom: Uom) -> Self {
        Perf { label: label.into(), value, uom, thresholds: Thresholds::default(), min: None, max: None }
    }

    pub fn thresholds(mut self, t: Thresholds) -> Self {
        self.thresholds = t;
        self
    }

    pub fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }

    pub fn max(mut self, max: f64) -> Self {
        self.max = Some(max);
        self
    }
}

impl fmt::Display for Perf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `|` would end the perfdata for some parsers and control characters the line: neither belongs in a label.
        let label: String =
            self.label.chars().map(|c| if c == '|' || c.is_control() { '_' } else { c }).collect::<String>();
        if label.is_empty() || label.contains([' ', '=', '\'']) {
            write!(f, "'{}'", label.replace('\'', "''"))?;
        } else {
            f.write_str(&label)?;
        }
        write!(f, "={}{}", Num(self.value), self.uom.as_str())?;
        let opt_range = |r: Option<Range>| r.map(|r| r.to_string()).unwrap_or_default();
        let opt_num = |n: Option<f64>| n.map(|n| Num(n).to_string()).unwrap_or_default();
        let fields = [
            opt_range(self.thresholds.warning),
            opt_range(self.thresholds.critical),
            opt_num(self.min),
            opt_num(self.max),
        ];
        // Trailing empty fields are left out; inner ones stay as empty fields between semicolons.
        let used = fields.iter().rposition(|s| !s.is_empty()).map_or(0, |i| i + 1);
        for field in &fields[..used] {
            write!(f, ";{field}")?;
        }
        Ok(())
    }
}

/// A check's whole result: printed as one line, returned as the exit status.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The short service name the line starts with, e.g. `LB`.
    pub service: String,
    pub state: State,
    /// What an operator reads on the monitoring screen.
    pub text: String,
    pub perf: Vec<Perf>,
}

impl Check {
    pub fn new(service: impl Into<String>, state: State, text: impl Into<String>) -> Self {
        Check { service: service.into(), state, text: text.into(), perf: Vec::new() }
    }

    /// The check could not tell: lbd did not answer, a bad argument, a refused request.
    pub fn unknown(service: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(service, State::Unknown, reason)
    }

    /// The status line: `SERVICE STATE - text | perfdata`.
    pub fn line(&self) -> String {
        // The text may carry no `|` (it would start the perfdata) and no line break (Nagios reads further lines
        // as long output, which this line is not).
        let text: String = self
            .text
            .chars()
            .map(|c| match c {
                '|' => '/',
                c if c.is_control() => ' ',
                c => c,
            })
            .collect();
        let mut line = format!("{} {} - {}", self.service, self.state, text.trim());
        if !self.perf.is_empty() {
            line.push_str(" |");
            for p in &self.perf {
                line.push(' ');
                line.push_str(&p.to_string());
            }
        }
        line
    }

    /// Prints the status line on stdout and returns the exit status a plugin ends with.
    pub fn report(&self) -> ExitCode {
        println!("{}", self.line());
        ExitCode::from(self.state.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ranges_alert_as_the_guidelines_say() {
        // (range, values that alert, values that do not)
        let cases: &[(&str, &[f64], &[f64])] = &[
            ("10", &[-1.0, 10.5, 11.0], &[0.0, 5.0, 10.0]),
            ("10:", &[9.99, -3.0], &[10.0, 1e9]),
            ("~:10", &[10.01, 100.0], &[10.0, -1e9]),
            ("10:20", &[9.0, 21.0], &[10.0, 15.0, 20.0]),
            ("@10:20", &[10.0, 15.0, 20.0], &[9.9, 20.1]),
            ("1:", &[0.0], &[1.0, 2.0]),
            ("-5:-1", &[0.0, -6.0], &[-5.0, -1.0]),
            ("0.5:1.5", &[0.4, 1.6], &[0.5, 1.0]),
            ("@0", &[0.0], &[0.1, -0.1]),
            ("~:", &[], &[-1e12, 0.0, 1e12]),
        ];
        for (range, alert, quiet) in cases {
            let rg = r(range);
            for v in *alert {
                assert!(rg.alerts(*v), "{range} should alert on {v}");
            }
            for v in *quiet {
                assert!(!rg.alerts(*v), "{range} should not alert on {v}");
            }
        }
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        assert_eq!("".parse::<Range>(), Err(RangeError::Empty));
        assert_eq!("  ".parse::<Range>(), Err(RangeError::Empty));
        for (bad, part) in
            [("abc", "abc"), ("1:x", "x"), ("x:1", "x"), ("@", ""), (":5", ""), ("inf", "inf"), ("1:NaN", "NaN")]
        {
            let e = bad.parse::<Range>().unwrap_err();
            assert_eq!(e, RangeError::NotANumber { range: bad.trim().into(), part: part.into() }, "{bad}");
            assert!(e.to_string().contains("expected N, N:, ~:N, N:M or @N:M"), "{e}");
        }
        let e = "20:10".parse::<Range>().unwrap_err();
        assert_eq!(e.to_string(), "bad threshold range \"20:10\": its start is above its end");
        assert!("-1".parse::<Range>().is_err(), "`-1` is 0..-1, start above end");
        assert!("~:-1".parse::<Range>().is_ok());
    }

    #[test]
    fn ranges_print_back_in_their_shortest_syntax() {
        for s in ["10", "10:", "~:10", "10:20", "@10:20", "@10", "~:", "1.5:2.5", "~:-3", "-2:"] {
            let shown = r(s).to_string();
            let again = r(&shown);
            assert_eq!(again, r(s), "{s} -> {shown}");
        }
        assert_eq!(r("0:10").to_string(), "10");
        assert_eq!(r("@10").to_string(), "@0:10");
        assert_eq!(Range::at_least(2.0).to_string(), "2:");
        assert_eq!(Range::at_most(5.0).to_string(), "5");
        assert_eq!(Range::at_most(-5.0).to_string(), "~:-5");
    }

    #[test]
    fn thresholds_pick_the_worst_state() {
        let t = Thresholds { warning: Some(r("2:")), critical: Some(r("1:")) };
        assert_eq!(t.state(3.0), State::Ok);
        assert_eq!(t.state(2.0), State::Ok);
        assert_eq!(t.state(1.0), State::Warning);
        assert_eq!(t.state(0.0), State::Critical);
        assert_eq!(Thresholds::default().state(-1e9), State::Ok);
        assert_eq!([State::Ok, State::Warning, State::Critical, State::Unknown].map(State::code), [0, 1, 2, 3]);
    }

    #[test]
    fn perfdata_quotes_labels_and_trims_empty_fields() {
        let t = Thresholds { warning: Some(r("2:")), critical: Some(r("1:")) };
        assert_eq!(
            Perf::new("usable_reals", 2.0, Uom::None).thresholds(t).min(0.0).max(2.0).to_string(),
            "usable_reals=2;2:;1:;0;2"
        );
        assert_eq!(Perf::new("packets", 123456789.0, Uom::Counter).to_string(), "packets=123456789c");
        assert_eq!(Perf::new("reals", 3.0, Uom::None).min(0.0).to_string(), "reals=3;;;0");
        assert_eq!(Perf::new("load", 0.25, Uom::Percent).max(100.0).to_string(), "load=0.25%;;;;100");
        assert_eq!(Perf::new("big", 1e21, Uom::Bytes).to_string(), "big=1000000000000000000000B");
        assert_eq!(Perf::new("x", f64::NAN, Uom::None).to_string(), "x=U");
        assert_eq!(Perf::new("active flows", 1.0, Uom::None).to_string(), "'active flows'=1");
        assert_eq!(Perf::new("a=b", 1.0, Uom::None).to_string(), "'a=b'=1");
        assert_eq!(Perf::new("it's", 1.0, Uom::None).to_string(), "'it''s'=1");
        assert_eq!(Perf::new("a|b\n", 1.0, Uom::Seconds).to_string(), "a_b_=1s");
        assert_eq!(Perf::new("", 1.0, Uom::None).to_string(), "''=1");
    }

    #[test]
    fn the_status_line() {
        let mut c = Check::new("LB", State::Warning, "tcp 10.0.0.100:80: 1 of 2 reals usable");
        assert_eq!(c.line(), "LB WARNING - tcp 10.0.0.100:80: 1 of 2 reals usable");
        c.perf.push(Perf::new("usable_reals", 1.0, Uom::None).min(0.0).max(2.0));
        c.perf.push(Perf::new("bytes", 42.0, Uom::Counter));
        assert_eq!(c.line(), "LB WARNING - tcp 10.0.0.100:80: 1 of 2 reals usable | usable_reals=1;;;0;2 bytes=42c");
        let u = Check::unknown("LB", "cannot reach lbd | try again\nlater ");
        assert_eq!(u.line(), "LB UNKNOWN - cannot reach lbd / try again later");
        assert_eq!(u.state.code(), 3);
    }
}
