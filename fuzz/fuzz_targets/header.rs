//! Any bytes as a safetensors header, with a data region of any length: never a panic.
#![no_main]

use std::path::Path;

use _core::header::{parse_header, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose how much data follows the header; the rest is the header.
    let (extra, header) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let size = 8 + header.len() as u64 + extra;
    if let Ok(h) = parse_header(
        Path::new("fuzz.safetensors"),
        header,
        size,
        &Limits::default(),
    ) {
        // Whatever parses is self-consistent: the data section is covered exactly.
        assert_eq!(h.data_bytes(), extra);
        let views: Vec<_> = h
            .tensors
            .iter()
            .map(|t| _core::lora::TensorView {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
            })
            .collect();
        let _ = _core::lora::infer(&views, _core::lora::InferOptions::default());
    }
});
