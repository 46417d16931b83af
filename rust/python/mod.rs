//! The Python extension module `adapterscan._core`.
//!
//! Inputs are turned into owned Rust values first; the scan runs with the GIL released; results
//! stay in Rust (`ScanResult`) and are handed over on request: whole-scan JSON in one string,
//! module and problem objects (few), per-tensor data only when asked for.

/// The extension allocates many small strings (tensor names) from several threads and frees them
/// together; mimalloc's per-thread free lists make that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::base::{Expected, Target};
use crate::check::Report;
use crate::error::ScanError;
use crate::infer::Kind;
use crate::read::open::{Limits, SymlinkPolicy};
use crate::scan::{scan as run_scan, ConfigSource, Scan, ScanOptions};

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

fn to_pyerr(py: Python<'_>, e: &ScanError) -> PyErr {
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
        ScanError::FileChanged { .. } => FileChangedError::new_err(msg),
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

/// One inferred LoRA module.
#[pyclass(frozen, get_all, module = "adapterscan._core", name = "Module")]
pub struct PyModuleInfo {
    path: String,
    kind: &'static str,
    variant: &'static str,
    layout: &'static str,
    rank: Option<u64>,
    in_dims: Option<u64>,
    out_dims: Option<u64>,
    num_experts: Option<u64>,
    dtype: &'static str,
    keys: Vec<String>,
}

#[pymethods]
impl PyModuleInfo {
    fn __repr__(&self) -> String {
        format!(
            "Module(path={:?}, kind={:?}, variant={:?}, layout={:?}, rank={}, in_dims={}, out_dims={}, num_experts={}, dtype={:?})",
            self.path,
            self.kind,
            self.variant,
            self.layout,
            opt(self.rank),
            opt(self.in_dims),
            opt(self.out_dims),
            opt(self.num_experts),
            self.dtype
        )
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "None".to_string(), |x| x.to_string())
}

/// One finding.
#[pyclass(frozen, get_all, module = "adapterscan._core", name = "Problem")]
pub struct PyProblem {
    code: &'static str,
    severity: &'static str,
    path: Option<String>,
    message: String,
}

#[pymethods]
impl PyProblem {
    fn __repr__(&self) -> String {
        format!(
            "Problem(code={:?}, severity={:?}, path={}, message={:?})",
            self.code,
            self.severity,
            self.path
                .as_ref()
                .map_or_else(|| "None".to_string(), |p| format!("{p:?}")),
            self.message
        )
    }
}

/// One file that was read.
#[pyclass(frozen, get_all, module = "adapterscan._core", name = "FileInfo")]
pub struct PyFileInfo {
    path: String,
    header_bytes: u64,
    tensor_count: usize,
    data_bytes: u64,
    metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[pymethods]
impl PyFileInfo {
    fn __repr__(&self) -> String {
        format!(
            "FileInfo(path={:?}, header_bytes={}, tensor_count={}, data_bytes={})",
            self.path, self.header_bytes, self.tensor_count, self.data_bytes
        )
    }
}

/// Modules that differ only in their layer index.
#[pyclass(frozen, get_all, module = "adapterscan._core", name = "ModuleGroup")]
pub struct PyModuleGroup {
    template: String,
    layers: Vec<u64>,
    count: usize,
    kind: &'static str,
    variant: &'static str,
    layout: &'static str,
    rank: Option<u64>,
    in_dims: Option<u64>,
    out_dims: Option<u64>,
    num_experts: Option<u64>,
    dtype: &'static str,
}

/// `(name, dtype, shape, (begin, end), file_index)`.
type TensorRow = (String, &'static str, Vec<u64>, (u64, u64), u32);

/// The result of a scan, held in Rust; everything is converted on request.
#[pyclass(frozen, module = "adapterscan._core", name = "ScanResult")]
pub struct PyScan {
    inner: Arc<Scan>,
}

#[pymethods]
impl PyScan {
    /// The path that was scanned.
    #[getter]
    fn path(&self) -> String {
        self.inner.path.to_string_lossy().into_owned()
    }
    /// `mlx`, `peft` or `unknown`.
    #[getter]
    fn format(&self) -> &'static str {
        self.inner.format.name()
    }
    /// `lora`, `dora`, `full` or None.
    #[getter]
    fn fine_tune_type(&self) -> Option<&'static str> {
        self.inner.fine_tune_type
    }
    /// Number of tensors in all files.
    #[getter]
    fn tensor_count(&self) -> usize {
        self.inner.tensors.len()
    }
    /// Bytes of tensor data in all files.
    #[getter]
    fn total_bytes(&self) -> u64 {
        self.inner.total_bytes()
    }
    /// The shard index, when there is one.
    #[getter]
    fn index_path(&self) -> Option<String> {
        self.inner
            .index_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
    }
    /// The config file read, when there is one.
    #[getter]
    fn config_path(&self) -> Option<String> {
        self.inner
            .config
            .as_ref()
            .map(|c| c.path.to_string_lossy().into_owned())
    }
    /// The config's schema name (`mlx`, `mlx_legacy`, `mlx_vlm_legacy`, `peft`, `unknown`).
    #[getter]
    fn config_schema(&self) -> Option<&'static str> {
        self.inner.config.as_ref().map(|c| c.schema.name())
    }
    /// Whether any problem has severity `error`.
    #[getter]
    fn has_errors(&self) -> bool {
        self.inner.has_errors()
    }

    /// The config as JSON text (key order kept), or None.
    fn config_json(&self) -> Option<String> {
        self.inner.config.as_ref().map(|c| c.raw.to_string())
    }

    /// The whole scan as the documented JSON object.
    #[pyo3(signature = (pretty = false))]
    fn to_json(&self, py: Python<'_>, pretty: bool) -> String {
        let inner = Arc::clone(&self.inner);
        py.detach(move || inner.to_json(pretty))
    }

    /// The modules, in natural path order.
    fn modules(&self) -> Vec<PyModuleInfo> {
        self.inner
            .modules
            .iter()
            .map(|m| PyModuleInfo {
                path: m.path.clone(),
                kind: m.kind.name(),
                variant: m.variant.name(),
                layout: m.layout.name(),
                rank: m.rank,
                in_dims: m.in_dims,
                out_dims: m.out_dims,
                num_experts: m.num_experts,
                dtype: m.dtype,
                keys: m
                    .tensor_ids
                    .iter()
                    .map(|&i| self.inner.tensors.get(i as usize).name.to_string())
                    .collect(),
            })
            .collect()
    }

    /// The problems, errors first.
    fn problems(&self) -> Vec<PyProblem> {
        problems_of(&self.inner.problems)
    }

    /// The files read.
    fn files(&self) -> Vec<PyFileInfo> {
        self.inner
            .files
            .iter()
            .map(|f| PyFileInfo {
                path: f.path.to_string_lossy().into_owned(),
                header_bytes: f.header_bytes,
                tensor_count: f.tensor_count,
                data_bytes: f.data_bytes,
                metadata: f.metadata.clone(),
            })
            .collect()
    }

    /// Modules grouped by path with the layer index replaced by `*`.
    fn module_groups(&self) -> Vec<PyModuleGroup> {
        self.inner
            .module_groups()
            .into_iter()
            .map(|g| PyModuleGroup {
                template: g.template,
                layers: g.layers,
                count: g.count,
                kind: g.module.kind.name(),
                variant: g.module.variant.name(),
                layout: g.module.layout.name(),
                rank: g.module.rank,
                in_dims: g.module.in_dims,
                out_dims: g.module.out_dims,
                num_experts: g.module.num_experts,
                dtype: g.module.dtype,
            })
            .collect()
    }

    /// Per-tensor data: `[(name, dtype, shape, (begin, end), file_index), ...]`.
    fn tensors(&self) -> Vec<TensorRow> {
        self.inner
            .tensors
            .with_files()
            .map(|(f, t)| {
                (
                    t.name.to_string(),
                    t.dtype.name(),
                    t.shape.to_vec(),
                    (t.begin, t.end),
                    f as u32,
                )
            })
            .collect()
    }

    /// Names of the tensors that are not adapter parameters.
    fn non_adapter_tensors(&self) -> Vec<String> {
        self.inner
            .non_adapter
            .iter()
            .map(|&i| self.inner.tensors.get(i).name.to_string())
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "ScanResult(path={:?}, format={:?}, modules={}, tensors={}, problems={})",
            self.path(),
            self.format(),
            self.inner.modules.len(),
            self.inner.tensors.len(),
            self.inner.problems.len()
        )
    }
}

/// Scan an adapter (a safetensors file, a folder, or a shard index) from its headers.
#[pyfunction]
#[pyo3(signature = (
    path,
    *,
    config = None,
    read_config = true,
    max_header_bytes = None,
    max_tensors = None,
    max_dims = None,
    max_index_bytes = None,
    symlinks = "follow",
))]
#[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
fn scan(
    py: Python<'_>,
    path: PathBuf,
    config: Option<PathBuf>,
    read_config: bool,
    max_header_bytes: Option<u64>,
    max_tensors: Option<usize>,
    max_dims: Option<usize>,
    max_index_bytes: Option<u64>,
    symlinks: &str,
) -> PyResult<PyScan> {
    let opts = ScanOptions {
        limits: limits_from(
            max_header_bytes,
            max_tensors,
            max_dims,
            max_index_bytes,
            symlinks,
        )?,
        config: match (config, read_config) {
            (_, false) => ConfigSource::Skip,
            (Some(p), true) => ConfigSource::Path(p),
            (None, true) => ConfigSource::Auto,
        },
    };
    let result = py.detach(move || run_scan(&path, &opts));
    match result {
        Ok(s) => Ok(PyScan { inner: Arc::new(s) }),
        Err(e) => Err(to_pyerr(py, &e)),
    }
}

/// The modules a model offers to adapters (from a base folder or a live model).
#[pyclass(frozen, module = "adapterscan._core", name = "ExpectedModules")]
pub struct PyExpected {
    inner: Arc<Expected>,
}

fn kind_from_name(name: &str) -> PyResult<Kind> {
    match name {
        "linear" => Ok(Kind::Linear),
        "switch" => Ok(Kind::Switch),
        "embedding" => Ok(Kind::Embedding),
        other => Err(PyValueError::new_err(format!(
            "kind must be 'linear', 'switch' or 'embedding', not {other:?}"
        ))),
    }
}

/// `(path, kind, in_dims, out_dims, num_experts)`.
type TargetRow = (String, String, Option<u64>, Option<u64>, Option<u64>);

#[pymethods]
impl PyExpected {
    /// Build from a table: `[(path, kind, in_dims, out_dims, num_experts), ...]` and optionally
    /// every parameter's shape (for full fine-tunes). More than 2^20 experts is refused
    /// (`ValueError`), as an unknown kind is.
    #[new]
    #[pyo3(signature = (targets, params = None, source = "live model".to_string()))]
    fn new(
        targets: Vec<TargetRow>,
        params: Option<Vec<(String, Vec<u64>)>>,
        source: String,
    ) -> PyResult<Self> {
        let mut rows = targets
            .into_iter()
            .map(|(path, kind, in_dims, out_dims, num_experts)| {
                if let Some(n) = num_experts.filter(|&n| n > crate::base::MAX_EXPERTS) {
                    return Err(PyValueError::new_err(format!(
                        "{path}: {n} experts, over the limit of {}",
                        crate::base::MAX_EXPERTS
                    )));
                }
                Ok(Target {
                    path,
                    kind: kind_from_name(&kind)?,
                    in_dims,
                    out_dims,
                    num_experts,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        crate::naming::natural::sort_natural(&mut rows, |t| t.path.as_str());
        Ok(Self {
            inner: Arc::new(Expected {
                source,
                targets: rows,
                params: crate::read::table::Tensors::from_named(
                    params
                        .into_iter()
                        .flatten()
                        .map(|(n, s)| (n, s.into_iter().collect())),
                ),
                problems: Vec::new(),
            }),
        })
    }

    /// Where the table came from.
    #[getter]
    fn source(&self) -> String {
        self.inner.source.clone()
    }

    /// The table: `[(path, kind, in_dims, out_dims, num_experts), ...]`.
    fn targets(&self) -> Vec<TargetRow> {
        self.inner
            .targets
            .iter()
            .map(|t| {
                (
                    t.path.clone(),
                    t.kind.name().to_string(),
                    t.in_dims,
                    t.out_dims,
                    t.num_experts,
                )
            })
            .collect()
    }

    /// The layer list path and its length, e.g. `("model.layers", 32)`.
    fn layers(&self) -> Option<(String, u64)> {
        self.inner.layers().map(|(p, n)| (p.to_string(), n))
    }

    fn __len__(&self) -> usize {
        self.inner.targets.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "ExpectedModules(source={:?}, modules={})",
            self.inner.source,
            self.inner.targets.len()
        )
    }
}

/// The result of a check, held in Rust.
#[pyclass(frozen, module = "adapterscan._core", name = "CheckResult")]
pub struct PyReport {
    inner: Arc<Report>,
}

/// `(key, saved, expected)`.
type MismatchRow = (String, Vec<u64>, Vec<u64>);

#[pymethods]
impl PyReport {
    /// No missing, unexpected or mis-shaped tensor and no error.
    #[getter]
    fn ok(&self) -> bool {
        self.inner.ok
    }
    /// Tensors promised but absent.
    fn missing(&self) -> Vec<String> {
        self.inner.missing.clone()
    }
    /// Saved LoRA tensors with no module to go to.
    fn unexpected(&self) -> Vec<String> {
        self.inner.unexpected.clone()
    }
    /// `[(key, saved, expected), ...]`.
    fn shape_mismatch(&self) -> Vec<MismatchRow> {
        self.inner
            .shape_mismatch
            .iter()
            .map(|m| (m.key.clone(), m.saved.clone(), m.expected.clone()))
            .collect()
    }
    /// Every problem, errors first.
    fn problems(&self) -> Vec<PyProblem> {
        problems_of(&self.inner.problems)
    }
    /// The documented JSON object.
    #[pyo3(signature = (pretty = false))]
    fn to_json(&self, pretty: bool) -> String {
        self.inner.to_json(pretty)
    }
}

fn problems_of(problems: &[crate::problem::Problem]) -> Vec<PyProblem> {
    problems
        .iter()
        .map(|p| PyProblem {
            code: p.code.name(),
            severity: p.severity.name(),
            path: p.path.clone(),
            message: p.message.clone(),
        })
        .collect()
}

/// Read a base model folder's `config.json` and safetensors headers into the table of modules an
/// adapter may target.
#[pyfunction]
#[pyo3(signature = (path, *, max_header_bytes = None, symlinks = "follow"))]
#[allow(clippy::needless_pass_by_value)]
fn read_base(
    py: Python<'_>,
    path: PathBuf,
    max_header_bytes: Option<u64>,
    symlinks: &str,
) -> PyResult<PyExpected> {
    let limits = limits_from(max_header_bytes, None, None, None, symlinks)?;
    match py.detach(move || crate::base::read_base(&path, &limits)) {
        Ok(e) => Ok(PyExpected { inner: Arc::new(e) }),
        Err(e) => Err(to_pyerr(py, &e)),
    }
}

/// Diff a scan against the expected modules.
#[pyfunction]
fn check(py: Python<'_>, scan: &PyScan, expected: &PyExpected) -> PyResult<PyReport> {
    let s = Arc::clone(&scan.inner);
    let e = Arc::clone(&expected.inner);
    match py.detach(move || crate::check::check(&s, &e)) {
        Ok(r) => Ok(PyReport { inner: Arc::new(r) }),
        Err(e) => Err(to_pyerr(py, &e)),
    }
}

/// Scan an adapter and read a base folder at the same time, then diff them.
#[pyfunction]
#[pyo3(signature = (adapter, base, *, config = None, read_config = true, symlinks = "follow"))]
#[allow(clippy::needless_pass_by_value)]
fn check_paths(
    py: Python<'_>,
    adapter: PathBuf,
    base: PathBuf,
    config: Option<PathBuf>,
    read_config: bool,
    symlinks: &str,
) -> PyResult<(PyScan, PyExpected, PyReport)> {
    let limits = limits_from(None, None, None, None, symlinks)?;
    let opts = ScanOptions {
        limits,
        config: match (config, read_config) {
            (_, false) => ConfigSource::Skip,
            (Some(p), true) => ConfigSource::Path(p),
            (None, true) => ConfigSource::Auto,
        },
    };
    let result = py.detach(move || crate::check::check_paths(&adapter, &opts, &base, &limits));
    match result {
        Ok((s, e, r)) => Ok((
            PyScan { inner: Arc::new(s) },
            PyExpected { inner: Arc::new(e) },
            PyReport { inner: Arc::new(r) },
        )),
        Err(e) => Err(to_pyerr(py, &e)),
    }
}

fn limits_from(
    max_header_bytes: Option<u64>,
    max_tensors: Option<usize>,
    max_dims: Option<usize>,
    max_index_bytes: Option<u64>,
    symlinks: &str,
) -> PyResult<Limits> {
    let defaults = Limits::default();
    let symlinks = SymlinkPolicy::from_name(symlinks).ok_or_else(|| {
        PyValueError::new_err(format!(
            "symlinks must be 'follow', 'inside' or 'refuse', not {symlinks:?}"
        ))
    })?;
    Ok(Limits {
        max_header_bytes: max_header_bytes.unwrap_or(defaults.max_header_bytes),
        max_tensors: max_tensors.unwrap_or(defaults.max_tensors),
        max_dims: max_dims.unwrap_or(defaults.max_dims),
        max_index_bytes: max_index_bytes.unwrap_or(defaults.max_index_bytes),
        symlinks,
    })
}

/// The opt-in pass over an adapter's tensor data, in batches the caller runs one by one (so it can
/// show progress and stop on Ctrl-C between them); each batch runs in parallel without the GIL.
#[pyclass(frozen, module = "adapterscan._core", name = "DataPass")]
pub struct PyDataPass {
    scan: Arc<Scan>,
    batches: Vec<Vec<crate::verify::Task>>,
    stats: std::sync::Mutex<Vec<Option<crate::verify::TensorStats>>>,
}

#[pymethods]
impl PyDataPass {
    #[new]
    #[pyo3(signature = (scan, batch_bytes = 1 << 28))]
    fn new(scan: &PyScan, batch_bytes: u64) -> Self {
        let inner = Arc::clone(&scan.inner);
        let batches = crate::verify::plan(&inner, batch_bytes.max(1));
        let n = inner.tensors.len();
        Self {
            scan: inner,
            batches,
            stats: std::sync::Mutex::new(vec![None; n]),
        }
    }

    fn __len__(&self) -> usize {
        self.batches.len()
    }

    /// Bytes of tensor data the whole pass reads.
    #[getter]
    fn total_bytes(&self) -> u64 {
        self.scan.total_bytes()
    }

    /// Run batch `i`; returns the bytes it read.
    fn run(&self, py: Python<'_>, i: usize) -> PyResult<u64> {
        let Some(batch) = self.batches.get(i) else {
            return Err(pyo3::exceptions::PyIndexError::new_err("no such batch"));
        };
        let scan = Arc::clone(&self.scan);
        let result = py.detach(|| crate::verify::run_batch(batch, &scan.tensors));
        let done = result.map_err(|e| to_pyerr(py, &e))?;
        let bytes = batch.iter().map(|t| t.len).sum();
        let mut stats = self
            .stats
            .lock()
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("a data pass failed"))?;
        for (i, s) in done {
            stats[i] = Some(s);
        }
        Ok(bytes)
    }

    /// The findings so far as JSON: bytes_read, tensors_checked, problems, modules.
    fn report_json(&self) -> PyResult<String> {
        let stats = self
            .stats
            .lock()
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("a data pass failed"))?;
        let report = crate::verify::summarize(&self.scan, &stats);
        serde_json::to_string(&report)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
    }
}

/// The mlx-lm path of a stacked expert module (`X.experts.P` -> `X.switch_mlp.P`, Mixtral's
/// `w1`/`w3`/`w2` renamed); other paths unchanged.
#[pyfunction]
fn stacked_path(path: &str) -> String {
    crate::naming::experts::stacked_path(path)
}

/// The Hugging Face per-expert name of expert `e` of a stacked module (`X.switch_mlp.P` ->
/// `X.experts.{e}.P`, Mixtral's `w1`/`w3`/`w2`).
#[pyfunction]
fn per_expert_path(path: &str, e: u64) -> String {
    crate::naming::experts::per_expert_path(path, e)
}

/// The names of every safetensors dtype with its bits per element.
#[pyfunction]
fn dtypes(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, bits) in crate::read::dtype::DTYPES {
        d.set_item(*name, *bits)?;
    }
    Ok(d)
}

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use super::{
        check, check_paths, dtypes, per_expert_path, read_base, scan, stacked_path, PyDataPass,
        PyExpected, PyFileInfo, PyModuleGroup, PyModuleInfo, PyProblem, PyReport, PyScan,
    };
    #[pymodule_export]
    use super::{
        AdapterFileError, AdapterScanError, ConfigError, DuplicateKeyError, EmptyHeaderError,
        FileChangedError, HeaderEncodingError, HeaderJsonError, HeaderTooLargeError,
        HeaderTooSmallError, HeaderTruncatedError, IncompleteFileError, MetadataError,
        MisalignedTensorError, NoAdapterError, NotRegularFileError, OffsetError, PathEscapeError,
        SafetensorsError, ShapeError, ShardIndexError, ShardMismatchError, TensorSizeError,
        TooManyTensorsError, UnknownDtypeError,
    };

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::prelude::*;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
