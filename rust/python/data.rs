//! The opt-in data pass for Python, batch by batch.
//!
//! May use: anything below the bindings.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::python::errors::to_pyerr;
use crate::python::scan::PyScan;
use crate::scan::Scan;

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
