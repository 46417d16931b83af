//! What a scan and a check hand over: the documented JSON contracts and the grouped summary the
//! table prints.
//!
//! - [`scan_json`]: `inspect --json` / `Scan.to_json()`.
//! - [`groups`]: modules grouped by their path with the layer index taken out.
//!
//! May use: `naming`, `infer`, `scan`, `check`, `problem`.

pub mod groups;
pub mod scan_json;
