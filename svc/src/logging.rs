//! Logging set-up of every binary: tracing to stderr, plain or JSON, filtered by `RUST_LOG` or the binary's default.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One human-readable line per event; colours only when stderr is a terminal and `NO_COLOR` is unset.
    #[default]
    Plain,
    /// One JSON object per line for log shippers: `timestamp`, `level`, `target` (the component), `fields`
    /// (`message` and the event's own fields: `app`, `key`, `node`, `service`, `real`, ...) and `span`.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(Format::Plain),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown log format {other:?}: expected plain or json")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Plain => "plain",
            Format::Json => "json",
        })
    }
}

/// Whether plain lines carry terminal colour codes: only on a terminal, never with `NO_COLOR` set (no-color.org),
/// so a file, a pipe or the journal gets clean text.
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber in the format the command line asks for (`--log-format plain|json`, read here
/// because logging starts before the arguments are parsed; the binary declares the flag so clap shows and checks
/// it) or `LOG_FORMAT`, plain by default. `default` applies when `RUST_LOG` is unset or unreadable, e.g.
/// `"info,netlink_packet_route=error"`. A second call (tests) is ignored.
pub fn init(default: &str) {
    let env = std::env::var("LOG_FORMAT").ok();
    init_with(default, requested(std::env::args().skip(1), env.as_deref()))
}

/// The format `--log-format X` / `--log-format=X` in `args`, else `env`, asks for; plain when neither names one
/// (a wrong value is then refused by the binary's own parser).
pub fn requested(args: impl Iterator<Item = String>, env: Option<&str>) -> Format {
    let mut args = args.peekable();
    let mut flag = None;
    while let Some(a) = args.next() {
        if a == "--" {
            break;
        }
        if let Some(v) = a.strip_prefix("--log-format=") {
            flag = Some(v.to_string());
        } else if a == "--log-format" {
            flag = args.next();
        }
    }
    flag.as_deref().or(env).and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// Installs the global subscriber in `format`; see [`init`].
pub fn init_with(default: &str, format: Format) {
    // A shell with RUST_BACKTRACE=1 would make every anyhow error a daemon reports (a bad flag, a missing file) end
    // in a stack trace the operator has to read past. Library backtraces stay available through RUST_LIB_BACKTRACE;
    // panics still honour RUST_BACKTRACE. Called first thing in main, before any thread reads the environment.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        Format::Plain => builder
            .with_ansi(colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref()))
            .try_init(),
        Format::Json => builder.json().with_current_span(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some(OsStr::new("1"))));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(colour(true, Some(OsStr::new(""))));
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(requested(args(&["edge", "--log-format", "json"]), None), Format::Json);
        assert_eq!(requested(args(&["--log-format=json"]), Some("plain")), Format::Json);
        assert_eq!(requested(args(&["--log-format=plain"]), Some("json")), Format::Plain);
        assert_eq!(requested(args(&["edge"]), Some("json")), Format::Json);
        assert_eq!(requested(args(&["edge"]), None), Format::Plain);
        assert_eq!(requested(args(&["--log-format", "xml"]), None), Format::Plain);
        assert_eq!(requested(args(&["--", "--log-format=json"]), None), Format::Plain);
    }

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("plain".parse::<Format>().unwrap(), Format::Plain);
        assert_eq!(Format::Json.to_string(), "json");
        let err = "xml".parse::<Format>().unwrap_err();
        assert!(err.contains("plain or json"), "{err}");
    }
}
