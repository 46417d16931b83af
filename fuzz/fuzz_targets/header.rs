//! Any bytes as a safetensors header, with a data region of any length: never a panic, and the
//! fast header path agrees with the full parser (checks in `_core::fuzzing::header`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| _core::fuzzing::header(data));
