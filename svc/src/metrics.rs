//! Prometheus text exposition (format 0.0.4), one encoder for every daemon. Values are read at scrape time by
//! the daemon and handed over as families; this module only writes them out, escaping labels and help.

use std::fmt::Write as _;

/// The Content-Type of a scrape's answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A sample's labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// One metric family: `# HELP`, `# TYPE` and its samples.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Labels, f64)>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}: counters end in _total");
        Family { name, help, kind, samples: Vec::new() }
    }

    pub fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Counter, help)
    }

    pub fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Gauge, help)
    }

    pub fn add(&mut self, labels: Labels, value: f64) -> &mut Self {
        self.samples.push((labels, value));
        self
    }

    /// The family with one sample (a process-wide counter or gauge).
    pub fn with(mut self, labels: Labels, value: f64) -> Self {
        self.samples.push((labels, value));
        self
    }
}

/// Renders families in the text format. Families without samples still get HELP and TYPE, so a dashboard sees
/// the name before the first service or stream exists.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, if f.kind == Kind::Counter { "counter" } else { "gauge" });
        for (labels, v) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(*v));
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values can come from clients (a stream key), so everything the format gives a meaning is escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Samples by metric name: [(labels, value)].
#[cfg(any(test, feature = "test-support"))]
pub type Parsed = std::collections::BTreeMap<String, Vec<(Vec<(String, String)>, f64)>>;

/// A strict reader of the text format, for tests: metric name -> [(labels, value)]; errors name the bad line.
#[cfg(any(test, feature = "test-support"))]
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut out = Parsed::new();
    let mut typed = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split_whitespace();
            let name = p.next().ok_or_else(|| bad("TYPE without a name"))?;
            match p.next() {
                Some("counter" | "gauge" | "histogram" | "summary" | "untyped") => {}
                _ => return Err(bad("unknown type")),
            }
            if !typed.insert(name.to_string()) {
                return Err(bad("TYPE given twice"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("value is not a number"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| bad("unclosed labels"))?;
                (name, parse_labels(body).map_err(&bad)?)
            }
        };
        if !valid_name(name) {
            return Err(bad("bad metric name"));
        }
        out.entry(name.to_string()).or_default().push((labels, value));
    }
    Ok(out)
}

#[cfg(any(test, feature = "test-support"))]
fn parse_labels(body: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut labels = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, c)) => val.push(c),
                    None => return Err("dangling escape"),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => val.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        if !valid_name(k) {
            return Err("bad label name");
        }
        labels.push((k.to_string(), val));
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
    }
    Ok(labels)
}

#[cfg(any(test, feature = "test-support"))]
fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_text_format() {
        let mut pk = Family::counter("lbd_service_packets_total", "Packets forwarded.");
        pk.add(vec![("vip", "10.0.0.1".into()), ("port", "80".into()), ("proto", "tcp".into())], 12.0);
        let mut up = Family::gauge("lbd_real_up", "1 when the real passes its check.");
        up.add(vec![("real", "10.0.0.2".into()), ("odd", "a\"b\\c\nd".into())], 1.0);
        let lat = Family::gauge("lbd_real_check_duration_seconds", "Last check latency.").with(vec![], 0.0125);
        let empty = Family::counter("lbd_events_total", "Events.\nTwo lines.");
        let text = render(&[pk, up, lat, empty]);
        assert!(text.contains("# TYPE lbd_service_packets_total counter\n"));
        assert!(text.contains("lbd_service_packets_total{vip=\"10.0.0.1\",port=\"80\",proto=\"tcp\"} 12\n"));
        assert!(text.contains("lbd_real_check_duration_seconds 0.0125\n"));
        assert!(text.contains("# HELP lbd_events_total Events.\\nTwo lines.\n"));
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed["lbd_service_packets_total"][0].1, 12.0);
        assert_eq!(parsed["lbd_real_up"][0].0[1], ("odd".to_string(), "a\"b\\c\nd".to_string()));
        assert!(!parsed.contains_key("lbd_events_total"));
    }

    #[test]
    fn special_values() {
        let f = Family::gauge("g", "h").with(vec![], f64::NAN);
        let inf = Family::gauge("i", "h").with(vec![], f64::INFINITY);
        let text = render(&[f, inf]);
        assert!(text.contains("g NaN\n") && text.contains("i +Inf\n"), "{text}");
    }

    #[test]
    fn parser_rejects_broken_text() {
        for bad in
            ["metric", "1bad 2", "m{a=\"x} 1", "m{a=\"x\"} one", "# TYPE m nonsense", "# TYPE m gauge\n# TYPE m gauge"]
        {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
