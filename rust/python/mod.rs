//! The Python extension module `adapterscan._core`.
//!
//! Inputs are turned into owned Rust values first; the scan runs with the GIL released; results
//! stay in Rust (`ScanResult`) and are handed over on request: whole-scan JSON in one string,
//! module and problem objects (few), per-tensor data only when asked for.
//!
//! May use: anything below the bindings.

/// The extension allocates many small strings (tensor names) from several threads and frees them
/// together; mimalloc's per-thread free lists make that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pyo3::prelude::*;

mod check;
mod data;
mod errors;
mod rules;
mod scan;

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use super::check::{check, check_paths, read_base, PyExpected, PyReport};
    #[pymodule_export]
    use super::data::PyDataPass;
    #[pymodule_export]
    use super::errors::{
        AdapterFileError, AdapterScanError, ConfigError, DuplicateKeyError, EmptyHeaderError,
        FileChangedError, HeaderEncodingError, HeaderJsonError, HeaderTooLargeError,
        HeaderTooSmallError, HeaderTruncatedError, IncompleteFileError, MetadataError,
        MisalignedTensorError, NoAdapterError, NotRegularFileError, OffsetError, PathEscapeError,
        SafetensorsError, ShapeError, ShardIndexError, ShardMismatchError, TensorSizeError,
        TooManyTensorsError, UnknownDtypeError,
    };
    #[pymodule_export]
    use super::rules::{
        compress_ranges, dtypes, hf_moe_block, is_adapter_file, layouts, mlx_moe_blocks,
        natural_order, per_expert_path, problem_codes, stacked_path, unpacked_width,
    };
    #[pymodule_export]
    use super::scan::{
        read_config_bytes, scan, PyFileInfo, PyModuleGroup, PyModuleInfo, PyProblem, PyScan,
    };

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::prelude::*;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("PEFT_PREFIX", super::rules::PEFT_PREFIX)?;
        m.add("SAVE_ID_KEY", crate::rules::save_id::METADATA_KEY)?;
        Ok(())
    }
}
