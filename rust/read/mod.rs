//! Reading files: every byte adapterscan reads from disk comes through here.
//!
//! - [`open`]: the one opener (regular files only, size limits, symlink policy, confinement).
//! - [`header`]: one safetensors header, validated by the format's rules; [`fast`] is its
//!   one-pass path for headers as writers produce them.
//! - [`table`]: the tensor entries of a header, and all files' tensors as one list.
//! - [`index`]: `*.safetensors.index.json` and confinement of the shards it names.
//! - [`resolve`]: which files of a folder are the adapter.
//! - [`plan`]: the first reads of one or two sides (adapter, base), in one parallel step.
//! - [`dtype`]: the safetensors dtype table.
//!
//! May use: `error`, `par`, `naming`.

pub mod dtype;
pub(crate) mod fast;
pub mod header;
pub mod index;
pub mod open;
pub(crate) mod plan;
pub mod resolve;
pub mod table;
