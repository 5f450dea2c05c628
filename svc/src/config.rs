//! One way every daemon reads its settings: a TOML file, overridden by command-line flags (a merge step), then
//! checked whole. An unknown key is refused with its name, file and line; an out-of-range value with the setting's
//! name, the value, the allowed range and why: never clamped.
//!
//! A daemon's settings are a struct with `#[serde(default)]` (its `Default` is the one place defaults live) and a
//! `validate` of its own that calls [`in_range`]; its flags are a clap struct of `Option`s that serialises to the
//! same keys, `None` skipped, so a flag given overrides the file and a flag not given leaves it alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Serialize;

/// Why a configuration was refused; each names the setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{at}: not valid TOML: {msg}")]
    Syntax { at: String, msg: String },
    #[error("{at}: unknown key `{key}`; {hint}")]
    UnknownKey { key: String, at: String, hint: String },
    #[error("{setting} ({at}): {msg}")]
    BadValue { setting: String, at: String, msg: String },
    #[error("{setting} {value} is out of range {range}: {why}")]
    OutOfRange { setting: String, value: String, range: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// How a daemon writes its keys in files and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// `max_registered` in the file (smd, lbd); `-` is accepted for `_`.
    Snake,
    /// `max-pulls` in the file, `--max-pulls` on the command line (the relay); `_` is accepted for `-`.
    Flags,
}

impl Keys {
    /// How the setting named by serde field `field` is shown to the user.
    pub fn show(self, field: &str) -> String {
        match self {
            Keys::Snake => field.to_string(),
            Keys::Flags => format!("--{}", field.replace('_', "-")),
        }
    }
}

/// A config file as read: its text (for line numbers) and its table.
#[derive(Debug, Clone)]
pub struct File {
    pub path: PathBuf,
    pub text: String,
    pub table: toml::Table,
}

impl File {
    pub fn read(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        File::parse(text, path)
    }

    /// Parses `text`; `path` names the file in errors.
    pub fn parse(text: String, path: &Path) -> Result<File, ConfigError> {
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            ConfigError::Syntax { at: at(path, line), msg: e.message().trim().to_string() }
        })?;
        Ok(File { path: path.into(), text, table })
    }

    /// `FILE line N` of a top-level key (or `[key]` table), or `FILE` when the line is not found.
    pub fn at(&self, key: &str) -> String {
        at(&self.path, self.line_of_key(key))
    }

    fn line_of_key(&self, key: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                let l = l.strip_prefix("[[").or_else(|| l.strip_prefix('[')).unwrap_or(l);
                let l = l.strip_prefix('"').unwrap_or(l);
                l.strip_prefix(key).is_some_and(|rest| {
                    let rest = rest.trim_start_matches('"').trim_start();
                    rest.starts_with('=') || rest.starts_with('.') || rest.starts_with(']')
                })
            })
            .map(|i| i + 1)
    }
}

fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(n) => format!("{} line {n}", path.display()),
        None => path.display().to_string(),
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The field names serde knows for struct `T` (what its file may contain): read from its `Deserialize` impl, so
/// the list cannot drift from the struct.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Grab(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> de::Deserializer<'de> for &mut Grab {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut g = Grab(None);
    let _ = T::deserialize(&mut g);
    g.0.unwrap_or(&[])
}

/// The flags given on the command line, as a table of the same keys as the file: `flags` is a struct of `Option`s
/// (and `Vec`s) serialised with `None` and empty lists left out.
pub fn flags_table<T: Serialize>(flags: &T) -> toml::Table {
    match toml::Value::try_from(flags) {
        Ok(toml::Value::Table(t)) => {
            t.into_iter().filter(|(_, v)| !matches!(v, toml::Value::Array(a) if a.is_empty())).collect()
        }
        // A flags struct always serialises to a table; anything else is a bug caught by each daemon's tests.
        _ => toml::Table::new(),
    }
}

/// The merge step: the file's settings (keys checked against `known`, field names of the settings), overridden by
/// the flags' (from [`flags_table`]), deserialised into the settings struct `T` whose `Default` fills the rest.
/// `hint` tells what the keys are (e.g. "keys are the long flags of `relay edge --help`").
pub fn merge<T: DeserializeOwned>(
    file: Option<&File>,
    flags: toml::Table,
    known: &[&str],
    keys: Keys,
    hint: &str,
) -> Result<T, ConfigError> {
    // Where each key came from, for messages: the file's line or the flag.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut merged = toml::Table::new();
    if let Some(f) = file {
        for (key, value) in &f.table {
            let field = key.replace('-', "_");
            if !known.contains(&field.as_str()) {
                return Err(ConfigError::UnknownKey { key: key.clone(), at: f.at(key), hint: hint.to_string() });
            }
            if merged.insert(field.clone(), value.clone()).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "{}: `{key}` is given twice (as {} and {})",
                    f.at(key),
                    field,
                    field.replace('_', "-")
                )));
            }
            origin.insert(field, f.at(key));
        }
    }
    for (field, value) in flags {
        origin.insert(field.clone(), "command line".into());
        // A repeatable flag adds to the file's list (more origins, more sources); any other replaces it.
        match (merged.get_mut(&field), value) {
            (Some(toml::Value::Array(have)), toml::Value::Array(more)) => have.extend(more),
            (_, value) => {
                merged.insert(field, value);
            }
        }
    }
    match T::deserialize(toml::Value::Table(merged.clone())) {
        Ok(t) => Ok(t),
        Err(whole) => {
            // Find the setting that failed: each alone over the defaults (every field has one).
            for (field, value) in &merged {
                let one: toml::Table = [(field.clone(), value.clone())].into_iter().collect();
                if let Err(e) = T::deserialize(toml::Value::Table(one)) {
                    let shown = match (keys, origin.get(field).map(String::as_str)) {
                        (Keys::Flags, Some("command line")) => keys.show(field),
                        (Keys::Flags, _) => field.replace('_', "-"),
                        (Keys::Snake, _) => field.clone(),
                    };
                    let setting = match value {
                        // A table or list is named by its key, its value being many lines.
                        toml::Value::Table(_) | toml::Value::Array(_) => shown,
                        v => format!("{shown} = {v}"),
                    };
                    return Err(ConfigError::BadValue {
                        setting,
                        at: origin.get(field).cloned().unwrap_or_default(),
                        // serde_toml adds "in `key`" on a line of its own: the setting is named already.
                        msg: e.to_string().lines().next().unwrap_or_default().trim().to_string(),
                    });
                }
            }
            Err(ConfigError::Invalid(whole.to_string()))
        }
    }
}

/// `cmd` with each flag's default, taken from the settings' `Default` serialised to `defaults`, shown in its help
/// (`[default: 30s]`): clap itself gets no default, so a flag not given never overrides the file.
pub fn show_defaults(mut cmd: clap::Command, defaults: &toml::Table) -> clap::Command {
    let ids: Vec<String> = cmd.get_arguments().map(|a| a.get_id().to_string()).collect();
    for id in ids {
        let shown = match defaults.get(&id) {
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Array(_)) | None => continue,
            Some(v) => v.to_string(),
        };
        cmd = cmd.mut_arg(&id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = a.get_long_help().map(|h| format!("{h} [default: {shown}]"));
            let a = a.help(format!("{help} [default: {shown}]"));
            match long {
                Some(l) => a.long_help(l),
                None => a,
            }
        });
    }
    let subs: Vec<String> = cmd.get_subcommands().map(|c| c.get_name().to_string()).collect();
    for name in subs {
        cmd = cmd.mut_subcommand(&name, |c| show_defaults(c, defaults));
    }
    cmd
}

/// Refuses `value` outside `lo..=hi`, naming the setting, the value, the range and why the range is what it is.
pub fn in_range<T: PartialOrd + fmt::Display>(
    setting: &str,
    value: T,
    lo: T,
    hi: T,
    why: &str,
) -> Result<(), ConfigError> {
    if value < lo || value > hi {
        return Err(ConfigError::OutOfRange {
            setting: setting.to_string(),
            value: value.to_string(),
            range: format!("{lo}..={hi}"),
            why: why.to_string(),
        });
    }
    Ok(())
}

/// The settings of `names` that `readme` never mentions as `` `name` `` or `` `--name` ``: a daemon's test fails
/// on any, so every setting is documented.
pub fn undocumented(readme: &str, names: &[String]) -> Vec<String> {
    let mentioned = |n: &str| {
        [format!("`{n}`"), format!("`{n} "), format!("`{n}="), format!("`[{n}]`"), format!("`[[{n}]]`")]
            .iter()
            .any(|f| readme.contains(f))
    };
    names.iter().filter(|n| !mentioned(n)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dur;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct S {
        max_pulls: u32,
        idle_timeout: Dur,
        name: Option<String>,
    }
    impl Default for S {
        fn default() -> Self {
            S { max_pulls: 1000, idle_timeout: Dur::secs(30), name: None }
        }
    }
    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        max_pulls: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        idle_timeout: Option<Dur>,
    }

    fn file(text: &str) -> Result<File, ConfigError> {
        File::parse(text.to_string(), Path::new("/etc/x.toml"))
    }
    fn load(f: Option<&File>, flags: &Flags) -> Result<S, ConfigError> {
        merge(f, flags_table(flags), fields::<S>(), Keys::Flags, "keys are the long flags")
    }

    #[test]
    fn fields_come_from_the_struct() {
        assert_eq!(fields::<S>(), &["max_pulls", "idle_timeout", "name"]);
    }

    #[test]
    fn defaults_then_file_then_flags() {
        assert_eq!(load(None, &Flags::default()).unwrap(), S::default());
        let f = file("max-pulls = 10\nidle_timeout = \"5s\"\n").unwrap();
        let s = load(Some(&f), &Flags::default()).unwrap();
        assert_eq!((s.max_pulls, s.idle_timeout), (10, Dur::secs(5)));
        let s = load(Some(&f), &Flags { max_pulls: Some(20), ..Flags::default() }).unwrap();
        assert_eq!((s.max_pulls, s.idle_timeout), (20, Dur::secs(5)));
    }

    #[test]
    fn unknown_keys_name_the_key_file_and_line() {
        let f = file("max-pulls = 10\n\nmax_pull = 3\n").unwrap();
        let e = load(Some(&f), &Flags::default()).unwrap_err().to_string();
        assert_eq!(e, "/etc/x.toml line 3: unknown key `max_pull`; keys are the long flags");
    }

    #[test]
    fn bad_values_name_the_setting_and_where() {
        let f = file("name = \"a\"\nmax-pulls = true\n").unwrap();
        let e = load(Some(&f), &Flags::default()).unwrap_err().to_string();
        assert!(e.starts_with("max-pulls = true (/etc/x.toml line 2): invalid type"), "{e}");
        let e = file("max-pulls: 3\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/x.toml line 1: not valid TOML"), "{e}");
    }

    #[test]
    fn out_of_range_says_value_range_and_why() {
        let e = in_range("--merge-ms", 5000, 0, 1000, "more is latency").unwrap_err().to_string();
        assert_eq!(e, "--merge-ms 5000 is out of range 0..=1000: more is latency");
        assert!(in_range("x", 1000, 0, 1000, "").is_ok());
        assert!(in_range("x", Dur::secs(2), Dur::secs(1), Dur::secs(3), "").is_ok());
    }

    #[test]
    fn undocumented_lists_the_missing() {
        let names = vec!["a".to_string(), "--b".to_string()];
        assert_eq!(undocumented("`a` = 3, `--b N`", &names), Vec::<String>::new());
        assert_eq!(undocumented("`a` and `--bb`", &names), vec!["--b".to_string()]);
    }
}
