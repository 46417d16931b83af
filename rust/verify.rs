//! The opt-in pass over tensor bytes: NaN/Inf, all-zero factors, and norms.
//!
//! Everything else in the crate reads headers only; this reads the data regions the scan already
//! validated, with positional reads (`pread`) into a buffer per task, so a file truncated under us
//! gives an I/O error instead of a SIGBUS. Work is split into batches the caller runs one at a
//! time (to report progress and honour Ctrl-C between them); each batch runs in parallel.
//!
//! May use: `error`, `read`, `naming`, `problem`, `scan`.

use std::fs::File;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Result, ScanError};
use crate::read::dtype::Dtype;
use crate::read::open::{open_regular, Identity, Limits};
use crate::scan::Scan;

/// What the data of one tensor holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TensorStats {
    /// The tensor.
    pub name: String,
    /// Elements that are NaN.
    pub nan: u64,
    /// Elements that are +Inf or -Inf.
    pub inf: u64,
    /// Whether every element is zero.
    pub all_zero: bool,
    /// The Frobenius norm of the finite elements.
    pub norm: f64,
    /// Whether the dtype was checked (integer and 4/6/8-bit float tensors are skipped).
    pub checked: bool,
}

/// One unit of work: a tensor's byte range in a file.
#[derive(Debug, Clone)]
pub struct Task {
    /// Index of the tensor in the scan.
    pub tensor: usize,
    /// The file.
    pub path: PathBuf,
    /// Absolute byte offset of the tensor's data.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Its dtype.
    pub dtype: Dtype,
    /// What the file was when it was scanned.
    pub identity: crate::read::open::Identity,
}

/// The tasks of a scan, grouped into batches of about `batch_bytes` each.
pub fn plan(scan: &Scan, batch_bytes: u64) -> Vec<Vec<Task>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut size = 0u64;
    for (i, (f, t)) in scan.tensors.with_files().enumerate() {
        let file = &scan.files[f];
        current.push(Task {
            tensor: i,
            path: file.path.clone(),
            offset: 8 + file.header_bytes + t.begin,
            len: t.nbytes(),
            dtype: t.dtype,
            identity: file.identity,
        });
        size += t.nbytes();
        if size >= batch_bytes {
            batches.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Run one batch in parallel.
pub fn run_batch(
    batch: &[Task],
    tensors: &crate::read::table::Tensors,
) -> Result<Vec<(usize, TensorStats)>> {
    // Each file once: opened through the one opener and checked to be the file scanned.
    let mut files: std::collections::HashMap<&std::path::Path, File> =
        std::collections::HashMap::new();
    for task in batch {
        if !files.contains_key(task.path.as_path()) {
            files.insert(&task.path, open_scanned(task)?);
        }
    }
    batch
        .par_iter()
        .map(|task| {
            let mut stats = stats_of(task, &files[task.path.as_path()])?;
            tensors.get(task.tensor).name.clone_into(&mut stats.name);
            Ok((task.tensor, stats))
        })
        .collect()
}

const CHUNK: usize = 1 << 22;

/// The task's file, if it is the one that was scanned (a regular file: a FIFO swapped in is
/// refused, never waited on).
fn open_scanned(task: &Task) -> Result<File> {
    let (file, _) = open_regular(&task.path, &Limits::default())?;
    let meta = file.metadata().map_err(|e| ScanError::io(&task.path, e))?;
    if Identity::of(&meta) != task.identity {
        return Err(ScanError::FileReplaced {
            path: task.path.clone(),
        });
    }
    Ok(file)
}

fn stats_of(task: &Task, file: &File) -> Result<TensorStats> {
    let decode: Option<fn(&[u8], &mut Acc)> = match task.dtype.name() {
        "F32" => Some(decode_f32),
        "F16" => Some(decode_f16),
        "BF16" => Some(decode_bf16),
        "F64" => Some(decode_f64),
        _ => None,
    };
    let mut acc = Acc::default();
    if let Some(decode) = decode {
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(task.len).unwrap_or(CHUNK))];
        let mut done = 0u64;
        while done < task.len {
            let n = usize::try_from((task.len - done).min(buf.len() as u64)).unwrap_or(0);
            read_exact_at(file, &mut buf[..n], task.offset + done)
                .map_err(|e| ScanError::io(&task.path, e))?;
            decode(&buf[..n], &mut acc);
            done += n as u64;
        }
    } else {
        acc.nonzero = true;
    }
    Ok(TensorStats {
        name: String::new(),
        nan: acc.nan,
        inf: acc.inf,
        all_zero: decode.is_some() && !acc.nonzero,
        norm: acc.sumsq.sqrt(),
        checked: decode.is_some(),
    })
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

#[derive(Default)]
struct Acc {
    nan: u64,
    inf: u64,
    nonzero: bool,
    sumsq: f64,
}

impl Acc {
    fn push(&mut self, x: f64) {
        if x.is_nan() {
            self.nan += 1;
        } else if x.is_infinite() {
            self.inf += 1;
            self.nonzero = true;
        } else {
            if x != 0.0 {
                self.nonzero = true;
            }
            self.sumsq += x * x;
        }
    }
}

fn decode_f32(bytes: &[u8], acc: &mut Acc) {
    for c in bytes.chunks_exact(4) {
        acc.push(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
}

fn decode_f64(bytes: &[u8], acc: &mut Acc) {
    for c in bytes.chunks_exact(8) {
        acc.push(f64::from_le_bytes([
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
        ]));
    }
}

fn decode_f16(bytes: &[u8], acc: &mut Acc) {
    for c in bytes.chunks_exact(2) {
        acc.push(half::f16::from_le_bytes([c[0], c[1]]).to_f64());
    }
}

fn decode_bf16(bytes: &[u8], acc: &mut Acc) {
    for c in bytes.chunks_exact(2) {
        acc.push(half::bf16::from_le_bytes([c[0], c[1]]).to_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_count_what_they_see() {
        let mut acc = Acc::default();
        let values = [1.0f32, f32::NAN, f32::INFINITY, -2.0, 0.0];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        decode_f32(&bytes, &mut acc);
        assert_eq!((acc.nan, acc.inf, acc.nonzero), (1, 1, true));
        assert!((acc.sumsq - 5.0).abs() < 1e-12);
        let mut acc = Acc::default();
        let bytes: Vec<u8> = [half::bf16::from_f32(3.0), half::bf16::ZERO]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        decode_bf16(&bytes, &mut acc);
        assert!((acc.sumsq - 9.0).abs() < 1e-12);
        let mut acc = Acc::default();
        decode_f16(&[0, 0, 0, 0], &mut acc);
        assert!(!acc.nonzero);
    }
}

/// What the data pass found, per module.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModuleNorms {
    /// Frobenius norm of the A factor(s).
    pub lora_a: f64,
    /// Frobenius norm of the B factor(s).
    pub lora_b: f64,
    /// Norm of the DoRA magnitude, if any.
    pub m: Option<f64>,
}

/// The result of a data pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataReport {
    /// Bytes of tensor data read.
    pub bytes_read: u64,
    /// Tensors whose values were checked.
    pub tensors_checked: usize,
    /// Problems found in the values.
    pub problems: Vec<crate::problem::Problem>,
    /// Norms per module, in module order.
    pub modules: Vec<(String, ModuleNorms)>,
}

/// Turn per-tensor statistics into problems and per-module norms.
pub fn summarize(scan: &Scan, stats: &[Option<TensorStats>]) -> DataReport {
    use crate::naming::leaves::{classify, Leaf, PEFT_PREFIX};
    use crate::problem::{Code, Problem, Severity};

    let mut report = DataReport::default();
    for (i, s) in stats.iter().enumerate() {
        let Some(s) = s else { continue };
        report.bytes_read += scan.tensors.get(i).nbytes();
        report.tensors_checked += usize::from(s.checked);
        if s.nan > 0 || s.inf > 0 {
            report.problems.push(Problem::new(
                Code::NonFiniteValues,
                Severity::Error,
                Some(&s.name),
                format!("{} NaN and {} Inf values", s.nan, s.inf),
            ));
        }
    }
    for m in &scan.modules {
        let mut norms = ModuleNorms::default();
        let (mut sa, mut sb, mut sm) = (0.0f64, 0.0f64, None::<f64>);
        let mut b_zero = true;
        let mut b_seen = false;
        for &id in &m.tensor_ids {
            let Some(s) = stats.get(id as usize).and_then(Option::as_ref) else {
                continue;
            };
            let name = s.name.strip_prefix(PEFT_PREFIX).unwrap_or(&s.name);
            match classify(name).map(|c| c.2) {
                Some(Leaf::A) => sa += s.norm * s.norm,
                Some(Leaf::B) => {
                    sb += s.norm * s.norm;
                    b_seen = true;
                    b_zero &= s.all_zero;
                }
                Some(Leaf::M) => *sm.get_or_insert(0.0) += s.norm * s.norm,
                None => {}
            }
        }
        norms.lora_a = sa.sqrt();
        norms.lora_b = sb.sqrt();
        norms.m = sm.map(f64::sqrt);
        if b_seen && b_zero {
            report.problems.push(Problem::new(
                Code::LoraBAllZero,
                Severity::Warning,
                Some(&m.path),
                "every value of the B factor is zero: the module was never trained, or its values were lost (it changes nothing)".into(),
            ));
        }
        report.modules.push((m.path.clone(), norms));
    }
    report
}
