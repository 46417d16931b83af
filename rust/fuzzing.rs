//! The bodies of the cargo-fuzz targets (`fuzz/`), kept here so the same checks run as unit tests
//! over the seed inputs and every input that once failed (`fuzz/regressions/<target>/`).
//!
//! May use: anything (it drives the parsers as the fuzz targets do).

use std::path::Path;

use crate::read::header::parse_header;
use crate::read::open::Limits;

/// Any bytes as a safetensors header, with a data region of any length: never a panic; whatever
/// parses is self-consistent, and the fast header path agrees with the full parser.
pub fn header(data: &[u8]) {
    // The first two bytes choose how much data follows the header; the rest is the header.
    let (extra, header) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let size = 8 + header.len() as u64 + extra;
    let limits = Limits::default();
    if let Ok(text) = std::str::from_utf8(header) {
        if let Some(fast) = crate::read::fast::parse(text, limits.max_tensors) {
            let full = crate::read::header::parse_full(Path::new("fuzz"), text, &limits);
            assert_eq!(
                Some(fast),
                full.ok(),
                "the fast path disagrees with the full parser"
            );
        }
    }
    if let Ok(h) = parse_header(Path::new("fuzz.safetensors"), header, size, &limits) {
        assert_eq!(h.data_bytes(), extra);
        let views: Vec<_> = h
            .iter()
            .map(|t| crate::infer::TensorView {
                name: t.name,
                dtype: t.dtype,
                shape: &t.info.shape,
            })
            .collect();
        let _ = crate::infer::infer(&views, crate::infer::InferOptions::default());
    }
}

/// Any bytes as a shard index, and every shard name it yields through folder confinement; the
/// fast index path agrees with the full parser.
pub fn index(data: &[u8]) {
    let path = Path::new("i.json");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(fast) = crate::read::index::parse_fast(text) {
            assert_eq!(
                Some(fast),
                crate::read::index::parse_full(path, text).ok(),
                "the fast index path disagrees with the full parser"
            );
        }
    }
    if let Ok(index) = crate::read::index::parse_index(path, data) {
        let _ = index.check_unique(path);
        for name in index.shard_names() {
            if let Ok(p) = crate::read::index::confine(
                Path::new("i.json"),
                Path::new("/adapter"),
                name,
                Some(".safetensors"),
            ) {
                assert!(p.starts_with("/adapter"));
                assert!(!p.components().any(|c| c == std::path::Component::ParentDir));
            }
        }
        let _ = index.entries().count();
    }
}

/// Any bytes as an `adapter_config.json`: a config or a typed error, never a panic.
pub fn config(data: &[u8]) {
    let _ = crate::config::parse_config(Path::new("adapter_config.json"), data);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every file of `fuzz/seeds/<target>` and `fuzz/regressions/<target>`.
    fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut out = Vec::new();
        for kind in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
        out
    }

    use super::*;

    #[test]
    fn seeds_and_past_failures_pass() {
        let mut n = 0;
        for (target, run) in [
            ("header", header as fn(&[u8])),
            ("index", index),
            ("config", config),
        ] {
            for (path, bytes) in inputs(target) {
                let result = std::panic::catch_unwind(|| run(&bytes));
                assert!(result.is_ok(), "{target}: {} fails", path.display());
                n += 1;
            }
        }
        assert!(n >= 4, "the seed inputs are missing");
    }
}
