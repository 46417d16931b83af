//! Any bytes as a shard index, and every shard name it yields through folder confinement
//! (checks in `_core::fuzzing::index`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| _core::fuzzing::index(data));
