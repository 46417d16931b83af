//! The crate's layering, checked on its own sources: each module uses only modules of its layer or
//! the layers below (see the crate docs), and no two files of the crate use each other, directly
//! or through others. Test code (after a `#[cfg(test)]` line) may use anything.
//!
//! May use: the standard library (it reads the crate's sources).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use the modules of its own layer and of lower ones.
const LAYERS: &[&[&str]] = &[
    &["error", "par"],
    &["problem", "naming"],
    &["read"],
    &["config"],
    &["infer"],
    &["rules"],
    &["scan"],
    &["base"],
    &["check"],
    &["report", "verify"],
    &["fuzzing", "python"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `read/header.rs` -> `read::header`; `read/mod.rs` -> `read`.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The `crate::a::b` paths a file's non-test code names (comments aside).
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_string();
        if !path.is_empty() {
            out.insert(path);
        }
    }
    out
}

/// The longest module among `modules` that `path` names (`read::header::Header` ->
/// `read::header`).
fn target<'m>(path: &str, modules: &'m BTreeSet<String>) -> Option<&'m String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get(&parts[..n].join("::")))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rust");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&root, f)).collect();
    let mut edges = BTreeMap::new();
    for f in &files {
        let from = module_of(&root, f);
        let text = std::fs::read_to_string(f).unwrap();
        let to: BTreeSet<String> = uses(&text)
            .iter()
            .filter_map(|p| target(p, &modules))
            .filter(|t| **t != from && !from.starts_with(&format!("{t}::")))
            .cloned()
            .collect();
        edges.insert(from, to);
    }
    edges
}

#[test]
fn every_module_uses_only_its_layer_and_below() {
    let mut wrong = Vec::new();
    for (from, to) in graph() {
        let top = from.split("::").next().unwrap_or("");
        let Some(own) = layer_of(top) else {
            assert!(top == "lib" || top == "layering", "{from} is in no layer");
            continue;
        };
        for t in to {
            let their = layer_of(t.split("::").next().unwrap_or("")).unwrap();
            if their > own {
                wrong.push(format!("{from} uses {t}"));
            }
        }
    }
    assert!(wrong.is_empty(), "upward uses: {wrong:#?}");
}

#[test]
fn no_module_cycle() {
    // Depth-first search with colours: 1 = on the current path, 2 = done.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match colour.get(m) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == m).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        colour.insert(m.to_string(), 1);
        path.push(m.to_string());
        for t in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(t, edges, colour, path) {
                return Some(c);
            }
        }
        path.pop();
        colour.insert(m.to_string(), 2);
        None
    }
    let edges = graph();
    let mut colour = BTreeMap::new();
    for m in edges.keys() {
        let cycle = visit(m, &edges, &mut colour, &mut Vec::new());
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_reader_of_uses_sees_lists_and_full_paths() {
    let text = "use crate::read::open::{Limits, X};\n/// [`crate::scan::Scan`]\nfn f() { crate::naming::paths::key_covers(); }\n#[cfg(test)]\nuse crate::python::x;";
    let u = uses(text);
    assert!(u.contains("read::open") && u.contains("naming::paths::key_covers"));
    assert!(!u
        .iter()
        .any(|p| p.starts_with("python") || p.starts_with("scan")));
}

#[test]
fn every_file_says_what_it_may_use() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rust");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let silent: Vec<String> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "lib.rs"))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let opening: Vec<&str> = text.lines().take_while(|l| l.starts_with("//!")).collect();
            opening.len() < 3 || !opening.iter().any(|l| l.starts_with("//! May use:"))
        })
        .map(|f| module_of(&root, f))
        .collect();
    assert!(
        silent.is_empty(),
        "no opening comment with `May use:`: {silent:?}"
    );
}
