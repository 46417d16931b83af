//! Any bytes as a shard index, and every shard name it yields through folder confinement.
#![no_main]

use std::path::Path;

use _core::index::{confine, parse_index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = parse_index(Path::new("i.json"), data) {
        for name in index.shard_names() {
            if let Ok(p) = confine(
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
});
