//! The one error type of the core.
//!
//! Every variant names the file it concerns and, where there is one, the tensor, the byte offset
//! or the JSON line and column. Each variant has a stable `code()` that the Python layer maps to its
//! own exception class and that the CLI prints.
//!
//! May use: nothing else of the crate.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One violation of the offset rules in a single file (safetensors rule F13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetViolation {
    /// The tensor whose `data_offsets` break the rule.
    pub tensor: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for OffsetViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.tensor, self.reason)
    }
}

/// One key that the shard index and the shards disagree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardKeyIssue {
    /// The tensor name.
    pub key: String,
    /// What is wrong, in words (names the shards involved).
    pub reason: String,
}

impl fmt::Display for ShardKeyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.reason)
    }
}

fn tensor_suffix(tensor: Option<&String>) -> String {
    tensor.map_or_else(String::new, |t| format!(" (tensor `{t}`)"))
}

fn join_list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong while reading an adapter.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The operating system refused an operation (not found, permission denied, ...).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A FIFO, socket, device or directory where a regular file is needed.
    #[error("{}: not a regular file ({kind}); refusing to read it", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// Fewer than the 8 bytes of the header length (F1).
    #[error("{}: header too small: the file has {size} bytes, a safetensors file needs at least 8", path.display())]
    HeaderTooSmall { path: PathBuf, size: u64 },
    /// The header length is zero.
    #[error("{}: empty header: the header length is 0", path.display())]
    EmptyHeader { path: PathBuf },
    /// The header length is over the limit (F2).
    #[error("{}: header too large: {len} bytes, the limit is {limit}", path.display())]
    HeaderTooLarge { path: PathBuf, len: u64, limit: u64 },
    /// The header length points past the end of the file (F3).
    #[error("{}: header truncated: the header needs {need} bytes, the file has {have}", path.display())]
    HeaderTruncated { path: PathBuf, need: u64, have: u64 },
    /// The header is not UTF-8 (F4).
    #[error("{}: invalid UTF-8 in header at byte offset {offset}", path.display())]
    HeaderEncoding { path: PathBuf, offset: u64 },
    /// The header is not one valid JSON object of the right shape (F5, F6, F9-F11).
    #[error("{}: invalid JSON in header at line {line}, column {column}{}: {message}", path.display(), tensor_suffix(tensor.as_ref()))]
    HeaderJson {
        path: PathBuf,
        line: usize,
        column: usize,
        tensor: Option<String>,
        message: String,
    },
    /// A key appears twice in the header (tensor names, `__metadata__`, or a field of one entry).
    #[error("{}: duplicate key `{key}` in header", path.display())]
    DuplicateKey { path: PathBuf, key: String },
    /// `__metadata__` is not a map of strings to strings (F8).
    #[error("{}: invalid __metadata__: {message}", path.display())]
    Metadata { path: PathBuf, message: String },
    /// A dtype that safetensors does not define (F11).
    #[error("{}: unknown dtype `{dtype}` for tensor `{tensor}`", path.display())]
    UnknownDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    /// The number of elements or bits overflows (F14), or the shape has too many dimensions.
    #[error("{}: invalid shape for tensor `{tensor}`: {message}", path.display())]
    Shape {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    /// The byte span does not match shape x dtype, or a sub-byte tensor ends mid-byte (F15, F16).
    #[error("{}: tensor `{tensor}` has {actual} bytes in its data_offsets, its shape and dtype need {expected}", path.display())]
    TensorSize {
        path: PathBuf,
        tensor: String,
        expected: u64,
        actual: u64,
    },
    /// A sub-byte dtype whose total bit count is not a multiple of 8 (F15).
    #[error("{}: tensor `{tensor}` has {bits} bits, not a whole number of bytes", path.display())]
    MisalignedTensor {
        path: PathBuf,
        tensor: String,
        bits: u64,
    },
    /// Gaps, overlaps, aliases, reversed ranges or a first tensor not at 0 (F13); all of them.
    #[error("{}: invalid data_offsets: {}", path.display(), join_list(violations))]
    Offsets {
        path: PathBuf,
        violations: Vec<OffsetViolation>,
    },
    /// The data section is not covered exactly: truncated data or trailing bytes (F17).
    #[error("{}: incomplete file: the header describes {expected} bytes in all, the file has {actual}", path.display())]
    IncompleteFile {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// More tensors in one header than the configured limit.
    #[error("{}: too many tensors: more than the limit of {limit}", path.display())]
    TooManyTensors { path: PathBuf, limit: usize },
    /// The file at a path is not the one that was scanned (replaced, or a link swapped in).
    #[error("{}: the file changed after it was scanned (replaced, rewritten or truncated); scan it again", path.display())]
    FileReplaced { path: PathBuf },
    /// The file changed size while it was being read.
    #[error("{}: the file changed while it was read ({before} bytes, then {after})", path.display())]
    FileChanged {
        path: PathBuf,
        before: u64,
        after: u64,
    },
    /// A shard index (`*.safetensors.index.json`) that is not valid JSON or not of the right shape.
    #[error("{}: invalid shard index: {message}", path.display())]
    ShardIndex { path: PathBuf, message: String },
    /// A file named by an index or a config resolves outside the adapter folder.
    #[error("{}: `{name}` escapes the adapter folder: {reason}", path.display())]
    PathEscape {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// Keys in the index and keys in the shards disagree; all of them.
    #[error("{}: the shard index and the shards disagree: {}", path.display(), join_list(issues))]
    ShardMismatch {
        path: PathBuf,
        issues: Vec<ShardKeyIssue>,
    },
    /// `adapter_config.json` is not valid JSON, not an object, or a known field has the wrong type.
    #[error("{}: invalid adapter config: {message}", path.display())]
    Config {
        path: PathBuf,
        field: Option<String>,
        message: String,
    },
    /// The folder holds no adapter weights, or more than one candidate and no way to choose.
    #[error("{}: {message}", path.display())]
    NoAdapter { path: PathBuf, message: String },
}

impl ScanError {
    /// A stable, machine-readable name for the error class.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => "not_found",
                io::ErrorKind::PermissionDenied => "permission_denied",
                _ => "io_error",
            },
            Self::NotRegularFile { .. } => "not_regular_file",
            Self::HeaderTooSmall { .. } => "header_too_small",
            Self::EmptyHeader { .. } => "empty_header",
            Self::HeaderTooLarge { .. } => "header_too_large",
            Self::HeaderTruncated { .. } => "header_truncated",
            Self::HeaderEncoding { .. } => "header_encoding",
            Self::HeaderJson { .. } => "header_json",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::Metadata { .. } => "invalid_metadata",
            Self::UnknownDtype { .. } => "unknown_dtype",
            Self::Shape { .. } => "invalid_shape",
            Self::TensorSize { .. } => "tensor_size_mismatch",
            Self::MisalignedTensor { .. } => "misaligned_tensor",
            Self::Offsets { .. } => "invalid_offsets",
            Self::IncompleteFile { .. } => "incomplete_file",
            Self::TooManyTensors { .. } => "too_many_tensors",
            Self::FileChanged { .. } | Self::FileReplaced { .. } => "file_changed",
            Self::ShardIndex { .. } => "invalid_shard_index",
            Self::PathEscape { .. } => "path_escape",
            Self::ShardMismatch { .. } => "shard_mismatch",
            Self::Config { .. } => "invalid_config",
            Self::NoAdapter { .. } => "no_adapter",
        }
    }

    /// The file the error concerns.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::NotRegularFile { path, .. }
            | Self::HeaderTooSmall { path, .. }
            | Self::EmptyHeader { path }
            | Self::HeaderTooLarge { path, .. }
            | Self::HeaderTruncated { path, .. }
            | Self::HeaderEncoding { path, .. }
            | Self::HeaderJson { path, .. }
            | Self::DuplicateKey { path, .. }
            | Self::Metadata { path, .. }
            | Self::UnknownDtype { path, .. }
            | Self::Shape { path, .. }
            | Self::TensorSize { path, .. }
            | Self::MisalignedTensor { path, .. }
            | Self::Offsets { path, .. }
            | Self::IncompleteFile { path, .. }
            | Self::TooManyTensors { path, .. }
            | Self::FileChanged { path, .. }
            | Self::FileReplaced { path }
            | Self::ShardIndex { path, .. }
            | Self::PathEscape { path, .. }
            | Self::ShardMismatch { path, .. }
            | Self::Config { path, .. }
            | Self::NoAdapter { path, .. } => path,
        }
    }

    /// The tensor (or key) the error concerns, if one.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            Self::HeaderJson { tensor, .. } => tensor.as_deref(),
            Self::DuplicateKey { key, .. } => Some(key),
            Self::UnknownDtype { tensor, .. }
            | Self::Shape { tensor, .. }
            | Self::TensorSize { tensor, .. }
            | Self::MisalignedTensor { tensor, .. } => Some(tensor),
            Self::Offsets { violations, .. } => violations.first().map(|v| v.tensor.as_str()),
            Self::ShardMismatch { issues, .. } => issues.first().map(|i| i.key.as_str()),
            _ => None,
        }
    }

    /// Every individual violation, for errors that collect several.
    pub fn details(&self) -> Vec<String> {
        match self {
            Self::Offsets { violations, .. } => {
                violations.iter().map(ToString::to_string).collect()
            }
            Self::ShardMismatch { issues, .. } => issues.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// The JSON line and column, for JSON errors.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        match self {
            Self::HeaderJson { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }

    /// A byte offset into the file, where the error has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::HeaderEncoding { offset, .. } => Some(*offset),
            Self::HeaderTruncated { have, .. } => Some(*have),
            Self::IncompleteFile { actual, .. } => Some(*actual),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the core.
pub type Result<T, E = ScanError> = std::result::Result<T, E>;
