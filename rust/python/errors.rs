//! The exception classes of `adapterscan._core` and the mapping of every [`ScanError`] to one,
//! with its attributes (`code`, `path`, `tensor`, `offset`, `line`, `column`, `field`, `details`).
//!
//! May use: `error`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::error::ScanError;

create_exception!(
    adapterscan._core,
    AdapterScanError,
    PyException,
    "Base class of every error adapterscan raises."
);
create_exception!(
    adapterscan._core,
    AdapterFileError,
    AdapterScanError,
    "A file could not be opened or read (missing, permission denied, I/O error)."
);
create_exception!(
    adapterscan._core,
    NotRegularFileError,
    AdapterFileError,
    "A FIFO, socket, device, directory or refused symlink where a regular file is needed."
);
create_exception!(
    adapterscan._core,
    SafetensorsError,
    AdapterScanError,
    "A malformed safetensors file."
);
create_exception!(
    adapterscan._core,
    HeaderTooSmallError,
    SafetensorsError,
    "Fewer than 8 bytes."
);
create_exception!(
    adapterscan._core,
    EmptyHeaderError,
    SafetensorsError,
    "The header length is 0."
);
create_exception!(
    adapterscan._core,
    HeaderTooLargeError,
    SafetensorsError,
    "The header length is over the limit."
);
create_exception!(
    adapterscan._core,
    HeaderTruncatedError,
    SafetensorsError,
    "The header runs past the end of the file."
);
create_exception!(
    adapterscan._core,
    HeaderEncodingError,
    SafetensorsError,
    "The header is not UTF-8."
);
create_exception!(
    adapterscan._core,
    HeaderJsonError,
    SafetensorsError,
    "The header is not a valid JSON object of tensor entries."
);
create_exception!(
    adapterscan._core,
    DuplicateKeyError,
    SafetensorsError,
    "A key appears twice."
);
create_exception!(
    adapterscan._core,
    MetadataError,
    SafetensorsError,
    "`__metadata__` is not a map of strings."
);
create_exception!(
    adapterscan._core,
    UnknownDtypeError,
    SafetensorsError,
    "A dtype safetensors does not define."
);
create_exception!(
    adapterscan._core,
    ShapeError,
    SafetensorsError,
    "A shape whose size overflows, or with too many dimensions."
);
create_exception!(
    adapterscan._core,
    TensorSizeError,
    SafetensorsError,
    "data_offsets do not span shape x dtype bytes."
);
create_exception!(
    adapterscan._core,
    MisalignedTensorError,
    SafetensorsError,
    "A sub-byte tensor that ends mid-byte."
);
create_exception!(
    adapterscan._core,
    OffsetError,
    SafetensorsError,
    "Gaps, overlaps or aliases among data_offsets (all are listed)."
);
create_exception!(
    adapterscan._core,
    IncompleteFileError,
    SafetensorsError,
    "Truncated data or trailing bytes."
);
create_exception!(
    adapterscan._core,
    TooManyTensorsError,
    SafetensorsError,
    "More tensors than the limit."
);
create_exception!(
    adapterscan._core,
    FileChangedError,
    SafetensorsError,
    "The file changed while it was read."
);
create_exception!(
    adapterscan._core,
    ShardIndexError,
    AdapterScanError,
    "A malformed `*.safetensors.index.json`."
);
create_exception!(
    adapterscan._core,
    ShardMismatchError,
    ShardIndexError,
    "The shard index and the shards disagree on which tensor is where."
);
create_exception!(
    adapterscan._core,
    PathEscapeError,
    AdapterScanError,
    "A file name that resolves outside the adapter folder."
);
create_exception!(
    adapterscan._core,
    ConfigError,
    AdapterScanError,
    "A malformed adapter_config.json, or a known field with the wrong type."
);
create_exception!(
    adapterscan._core,
    NoAdapterError,
    AdapterScanError,
    "No adapter weights to scan at the path, or no way to choose among several."
);

pub(crate) fn to_pyerr(py: Python<'_>, e: &ScanError) -> PyErr {
    let msg = e.to_string();
    let err = match e {
        ScanError::Io { .. } => AdapterFileError::new_err(msg),
        ScanError::NotRegularFile { .. } => NotRegularFileError::new_err(msg),
        ScanError::HeaderTooSmall { .. } => HeaderTooSmallError::new_err(msg),
        ScanError::EmptyHeader { .. } => EmptyHeaderError::new_err(msg),
        ScanError::HeaderTooLarge { .. } => HeaderTooLargeError::new_err(msg),
        ScanError::HeaderTruncated { .. } => HeaderTruncatedError::new_err(msg),
        ScanError::HeaderEncoding { .. } => HeaderEncodingError::new_err(msg),
        ScanError::HeaderJson { .. } => HeaderJsonError::new_err(msg),
        ScanError::DuplicateKey { .. } => DuplicateKeyError::new_err(msg),
        ScanError::Metadata { .. } => MetadataError::new_err(msg),
        ScanError::UnknownDtype { .. } => UnknownDtypeError::new_err(msg),
        ScanError::Shape { .. } => ShapeError::new_err(msg),
        ScanError::TensorSize { .. } => TensorSizeError::new_err(msg),
        ScanError::MisalignedTensor { .. } => MisalignedTensorError::new_err(msg),
        ScanError::Offsets { .. } => OffsetError::new_err(msg),
        ScanError::IncompleteFile { .. } => IncompleteFileError::new_err(msg),
        ScanError::TooManyTensors { .. } => TooManyTensorsError::new_err(msg),
        ScanError::FileChanged { .. } | ScanError::FileReplaced { .. } => {
            FileChangedError::new_err(msg)
        }
        ScanError::ShardIndex { .. } => ShardIndexError::new_err(msg),
        ScanError::ShardMismatch { .. } => ShardMismatchError::new_err(msg),
        ScanError::PathEscape { .. } => PathEscapeError::new_err(msg),
        ScanError::Config { .. } => ConfigError::new_err(msg),
        ScanError::NoAdapter { .. } => NoAdapterError::new_err(msg),
    };
    let value = err.value(py);
    let (line, column) = e.line_column().unzip();
    let field = match e {
        ScanError::Config { field, .. } => field.clone(),
        _ => None,
    };
    let attrs = [
        value.setattr("code", e.code()),
        value.setattr("path", e.path().to_string_lossy().into_owned()),
        value.setattr("tensor", e.tensor()),
        value.setattr("offset", e.offset()),
        value.setattr("line", line),
        value.setattr("column", column),
        value.setattr("field", field),
        value.setattr("details", e.details()),
    ];
    if let Some(Err(set_err)) = attrs.into_iter().find(Result::is_err) {
        return set_err;
    }
    err
}
