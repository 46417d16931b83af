//! The expected side (a base folder's table, or a live model's rows) and the check's result.
//!
//! May use: anything below the bindings.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::base::{Expected, Target};
use crate::check::Report;
use crate::infer::Kind;
use crate::python::errors::to_pyerr;
use crate::python::scan::{limits_from, problems_of, PyProblem, PyScan};
use crate::scan::{ConfigSource, ScanOptions};

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

/// Read a base model folder's `config.json` and safetensors headers into the table of modules an
/// adapter may target.
#[pyfunction]
#[pyo3(signature = (path, *, max_header_bytes = None, symlinks = "follow"))]
#[allow(clippy::needless_pass_by_value)]
pub fn read_base(
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
pub fn check(py: Python<'_>, scan: &PyScan, expected: &PyExpected) -> PyResult<PyReport> {
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
pub fn check_paths(
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
