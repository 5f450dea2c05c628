//! The relay's layers point only downward: reads every file under relay/src and fails when one names a module of
//! a higher layer (`use crate::...` or a `crate::x::` path), or when ingest and egress name each other.
//!
//! Layers, lowest first: wire < hub < ingest, egress < control. lib.rs (wiring), config.rs and metrics.rs (shared
//! by all), the test-support modules and the binary sit outside the layering. Names lib.rs re-exports from a layer
//! (`pub use wire::{chunk, proto};`) count as that layer, so an old path cannot hide an upward import.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const LAYERS: [&str; 5] = ["wire", "hub", "ingest", "egress", "control"];
/// Files outside the layering (paths under relay/src).
const OUTSIDE: [&str; 7] = ["lib.rs", "config.rs", "metrics.rs", "fuzz.rs", "loadgen.rs", "hlsload.rs", "bin/relay.rs"];

fn rank(layer: &str) -> usize {
    match layer {
        "wire" => 0,
        "hub" => 1,
        "ingest" | "egress" => 2,
        "control" => 3,
        other => panic!("not a layer: {other}"),
    }
}

/// Whether a file of layer `from` may name layer `to`.
fn allowed(from: &str, to: &str) -> bool {
    from == to || rank(to) < rank(from)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without `//` comments (doc links may name any module; only code imports).
fn code_of(text: &str) -> String {
    text.lines().map(|l| l.split_once("//").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

/// The first path segment of every `crate::` path in `code`, each brace group's items counted one by one.
fn crate_roots(code: &str) -> Vec<String> {
    let mut roots = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `$crate::` or an identifier ending in "crate" is not our crate.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        roots.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            roots.push(first_segment(&item));
        } else {
            roots.push(first_segment(rest));
        }
    }
    roots.retain(|r| !r.is_empty());
    roots
}

fn first_segment(s: &str) -> String {
    s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Names lib.rs re-exports from a layer (`pub use wire::{chunk, proto};` gives chunk and proto -> wire).
fn reexports(lib: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let code = code_of(lib);
    for stmt in code.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let layer = first_segment(path);
        if !LAYERS.contains(&layer.as_str()) {
            continue;
        }
        let names: Vec<&str> = match (path.find('{'), path.rfind('}')) {
            (Some(a), Some(b)) => path[a + 1..b].split(',').collect(),
            _ => vec![path.rsplit("::").next().unwrap_or("")],
        };
        for n in names {
            // `x as y` exports y.
            let n = n.rsplit(" as ").next().unwrap_or(n).trim();
            if !n.is_empty() {
                map.insert(n.to_string(), layer.clone());
            }
        }
    }
    map
}

/// The layer a `crate::ROOT` path lands in, if any.
fn layer_of_root(root: &str, aliases: &HashMap<String, String>) -> Option<String> {
    if LAYERS.contains(&root) {
        return Some(root.to_string());
    }
    aliases.get(root).cloned()
}

/// Every upward (or ingest <-> egress) name in `code` of a file of layer `layer`.
fn violations(layer: &str, code: &str, aliases: &HashMap<String, String>) -> Vec<String> {
    crate_roots(&code_of(code))
        .into_iter()
        .filter_map(|root| {
            let to = layer_of_root(&root, aliases)?;
            (!allowed(layer, &to)).then(|| format!("crate::{root} ({to})"))
        })
        .collect()
}

#[test]
fn the_checker_sees_upward_imports_in_every_form() {
    let aliases =
        reexports("pub use wire::{chunk, proto};\npub use control::{callback, managed};\npub use ingest::rtsp;");
    assert_eq!(aliases.get("proto").map(String::as_str), Some("wire"));
    assert_eq!(aliases.get("callback").map(String::as_str), Some("control"));
    assert_eq!(aliases.get("rtsp").map(String::as_str), Some("ingest"));
    assert_eq!(violations("hub", "use crate::egress::player::Player;", &aliases), ["crate::egress (egress)"]);
    assert_eq!(
        violations("hub", "use crate::{wire::proto, control::Control};", &aliases),
        ["crate::control (control)"]
    );
    assert_eq!(
        violations("egress", "let x = crate::ingest::edge::ensure_pull(a);", &aliases),
        ["crate::ingest (ingest)"]
    );
    assert_eq!(violations("ingest", "use crate::callback::Event;", &aliases), ["crate::callback (control)"]);
    assert_eq!(violations("wire", "use crate::{\n    hub::Hub,\n    shown,\n};", &aliases), ["crate::hub (hub)"]);
    // Downward, same-layer, outside-the-layering names and comments pass.
    assert!(violations("control", "use crate::egress::Egress; use crate::ingest::Ingest;", &aliases).is_empty());
    assert!(violations(
        "egress",
        "use crate::hub::Hub; use crate::proto::Media; use crate::{Config, metrics::Metrics};",
        &aliases
    )
    .is_empty());
    assert!(violations("hub", "// see crate::control::api\nuse crate::wire::proto::Media;", &aliases).is_empty());
}

#[test]
fn no_file_of_the_relay_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("relay/src/lib.rs");
    let aliases = reexports(&lib);
    assert!(aliases.contains_key("proto"), "lib.rs re-exports wire::proto: {aliases:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut per_layer: HashMap<&str, usize> = HashMap::new();
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        let first = rel.split('/').next().unwrap();
        let Some(layer) = LAYERS.iter().find(|l| **l == first) else {
            assert!(OUTSIDE.contains(&rel.as_str()), "relay/src/{rel} is in no layer: put it in one of {LAYERS:?}");
            continue;
        };
        *per_layer.entry(layer).or_default() += 1;
        let text = std::fs::read_to_string(f).unwrap();
        for v in violations(layer, &text, &aliases) {
            bad.push(format!("relay/src/{rel} ({layer}) names {v}"));
        }
    }
    for l in LAYERS {
        assert!(per_layer.get(l).copied().unwrap_or(0) >= 2, "layer {l} has no files: {per_layer:?}");
    }
    assert!(bad.is_empty(), "imports of a higher layer:\n{}", bad.join("\n"));
}
