//! Scans for Python: the scan runs with the GIL released; the result stays in Rust
//! (`ScanResult`) and is handed over on request.
//!
//! May use: anything below the bindings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::config::settings::{Scale, Settings};
use crate::python::errors::to_pyerr;
use crate::read::open::{Limits, SymlinkPolicy};
use crate::scan::{scan as run_scan, ConfigSource, Scan, ScanOptions};

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
    /// `(key, leaf, index)` per tensor: leaf `a`, `b` or `m`; the list or expert index, if any.
    factors: Vec<(String, &'static str, Option<u64>)>,
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
    pub(crate) inner: Arc<Scan>,
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

    /// `(path, scale, dropout)` of every module, as the config gives them (scale `None` when it
    /// records none; a list when it records one per output feature; peft's defaults for a PEFT
    /// adapter without a config).
    fn module_settings(&self) -> PyResult<Vec<(String, Option<ScaleValue>, f64)>> {
        let as_py = |s: crate::config::settings::ModuleSettings| {
            s.scale.map(|x| match x {
                Scale::One(v) => ScaleValue::One(v),
                Scale::PerOutput(v) => ScaleValue::PerOutput(v),
            })
        };
        let Some(c) = &self.inner.config else {
            // No config: a PEFT adapter has peft's defaults; an mlx one records nothing.
            if self.inner.format != crate::scan::Format::Peft {
                return Ok(Vec::new());
            }
            return Ok(self
                .inner
                .modules
                .iter()
                .map(|m| {
                    let s = crate::config::settings::peft_defaults(m.rank);
                    let dropout = s.dropout;
                    (m.path.clone(), as_py(s), dropout)
                })
                .collect());
        };
        Python::attach(|py| {
            let settings = Settings::new(c).map_err(|e| to_pyerr(py, &e))?;
            self.inner
                .modules
                .iter()
                .map(|m| {
                    let s = settings.of(&m.path, m.rank).map_err(|e| to_pyerr(py, &e))?;
                    let dropout = s.dropout;
                    Ok((m.path.clone(), as_py(s), dropout))
                })
                .collect()
        })
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
                factors: m
                    .factors()
                    .map(|(i, leaf, index)| {
                        let name = self.inner.tensors.get(i as usize).name.to_string();
                        (name, leaf.name(), index)
                    })
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
pub fn scan(
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

pub(crate) fn limits_from(
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

pub(crate) fn problems_of(problems: &[crate::problem::Problem]) -> Vec<PyProblem> {
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

/// A module's scale for Python: a float, or a list of floats.
#[derive(IntoPyObject)]
pub enum ScaleValue {
    /// One scale.
    One(f64),
    /// One per output feature.
    PerOutput(Vec<f64>),
}

/// The largest config file read (real ones are a few kB; PEFT's and mlx-lm's well under 1 MB).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The bytes of a JSON config file (an adapter's or a model's), through the one opener every
/// read uses: a regular file only (a FIFO or a device is refused before any read), at most 16
/// MiB, the symlink policy, and with `symlinks="inside"` confined to `folder`.
#[pyfunction]
#[pyo3(signature = (path, *, folder = None, symlinks = "follow"))]
#[allow(clippy::needless_pass_by_value)] // pyo3 hands the paths over owned
pub fn read_config_bytes(
    py: Python<'_>,
    path: PathBuf,
    folder: Option<PathBuf>,
    symlinks: &str,
) -> PyResult<Py<pyo3::types::PyBytes>> {
    let limits = limits_from(None, None, None, Some(MAX_CONFIG_BYTES), symlinks)?;
    let result = py.detach(|| {
        if limits.symlinks == SymlinkPolicy::Inside {
            let folder = folder
                .as_deref()
                .or_else(|| path.parent())
                .unwrap_or(Path::new("."));
            crate::read::open::check_inside(folder, &path)?;
        }
        crate::read::open::read_small_file(&path, &limits, crate::read::open::SmallFile::Config)
    });
    match result {
        Ok(bytes) => Ok(pyo3::types::PyBytes::new(py, &bytes).unbind()),
        Err(e) => Err(to_pyerr(py, &e)),
    }
}
