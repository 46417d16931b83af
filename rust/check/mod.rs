//! Will this adapter fit this model? The diff of saved tensors against the expected ones.
//!
//! The expected side comes from a base folder's headers ([`crate::base::read_base`]) or from a
//! live model's table handed over by the Python layer. Everything is keyed by module path in one
//! hash map, so the diff is linear in the number of tensors.
//!
//! May use: everything below it: `naming`, `read`, `config`, `infer`, `scan`, `base`, `problem`.

use std::path::Path;

use serde::Serialize;

use crate::base::{Expected, PendingBase, Target};
use crate::error::Result;
use crate::infer::Module;
use crate::naming::experts::stacked_path;
use crate::problem::{Code, Problem, Severity};
use crate::read::open::Limits;
use crate::read::plan::read_plans;
use crate::scan::{Format, Scan, ScanOptions};

/// A saved tensor whose shape is not the one the model needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShapeMismatch {
    /// The tensor name as saved.
    pub key: String,
    /// Its saved shape.
    pub saved: Vec<u64>,
    /// The shape the model (and the config's rank) needs.
    pub expected: Vec<u64>,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No missing, unexpected or mis-shaped tensor, and no problem of severity error.
    pub ok: bool,
    /// Tensors promised (by the config or by their pair) but absent.
    pub missing: Vec<String>,
    /// Saved LoRA tensors with no module of the model to go to.
    pub unexpected: Vec<String>,
    /// Saved tensors of the wrong shape.
    pub shape_mismatch: Vec<ShapeMismatch>,
    /// Problems of the adapter, of the base, and of the pair.
    pub problems: Vec<Problem>,
}

impl Report {
    /// The report as the documented JSON object.
    pub fn to_json(&self, pretty: bool) -> String {
        let out = if pretty {
            serde_json::to_string_pretty(self)
        } else {
            serde_json::to_string(self)
        };
        out.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

mod expect;
mod fused;
mod module;

use expect::{names_for, prefix_hint, promised, Ranks};
use fused::fused_key;
use module::{check_module, Findings, ModuleCx};

/// Scan the adapter at `adapter`, read the base folder `base` and diff them. The headers of both
/// (and their shard indexes) are read in one parallel step. Errors of the adapter come first.
pub fn check_paths(
    adapter: &Path,
    opts: &ScanOptions,
    base: &Path,
    base_limits: &Limits,
) -> Result<(Scan, Expected, Report)> {
    let pending = crate::scan::Pending::new(adapter, opts)?;
    let pending_base = PendingBase::new(base, base_limits);
    let mut plans = vec![pending.plan()];
    if let Ok(b) = &pending_base {
        plans.push(b.plan());
    }
    let mut done = read_plans(&plans).into_iter();
    drop(plans);
    let scan = pending.finish(done.next().unwrap_or_default())?;
    let expected = pending_base?.finish(done.next().unwrap_or_default())?;
    let report = check(&scan, &expected)?;
    Ok((scan, expected, report))
}

/// Diff an adapter scan against what a model expects.
pub fn check(scan: &Scan, expected: &Expected) -> Result<Report> {
    let mut missing = Vec::new();
    let mut unexpected = Vec::new();
    let mut mismatches = Vec::new();
    let mut problems: Vec<Problem> = scan.problems.clone();
    problems.extend(expected.problems.iter().cloned());

    if scan.fine_tune_type == Some("full") && scan.modules.is_empty() {
        let names = scan
            .tensors
            .iter()
            .map(|t| (t.name, t.info.shape.as_slice()));
        check_full_tensors(names, expected, &mut unexpected, &mut mismatches);
        return Ok(finish(missing, unexpected, mismatches, problems));
    }

    let lookup: foldhash::HashMap<String, &Target> = expected
        .targets
        .iter()
        .map(|t| (stacked_path(&t.path), t))
        .collect();
    let ranks = Ranks::new(scan.config.as_ref())?;
    let dora = scan.fine_tune_type == Some("dora");
    let peft = scan.format == Format::Peft;
    let flipped_known: foldhash::HashSet<&str> = scan
        .problems
        .iter()
        .filter(|p| p.code == Code::OrientationFlipped)
        .filter_map(|p| p.path.as_deref())
        .collect();

    let cx = ModuleCx {
        scan,
        lookup: &lookup,
        ranks: &ranks,
        dora,
        peft,
        flipped_known: &flipped_known,
    };
    // Modules are independent: checked in parallel, findings merged in module order.
    let findings: Vec<Findings<'_>> = crate::par::map(
        &scan.modules,
        scan.tensors.len() >= crate::par::MIN_PARALLEL,
        |m| check_module(&cx, m),
    );
    let mut covered: foldhash::HashSet<&str> = foldhash::HashSet::default();
    let mut unmatched: Vec<&Module> = Vec::new();
    for (m, f) in scan.modules.iter().zip(findings) {
        if f.unmatched {
            unmatched.push(m);
        }
        covered.extend(f.covered);
        missing.extend(f.missing);
        unexpected.extend(f.unexpected);
        mismatches.extend(f.mismatches);
        problems.extend(f.problems);
    }

    if let Some(c) = scan.config.as_ref().filter(|c| !c.full_tensors.is_empty()) {
        let shape_of: foldhash::HashMap<&str, &[u64]> = scan
            .tensors
            .iter()
            .map(|t| (t.name, t.info.shape.as_slice()))
            .collect();
        // A declared tensor the files lack is reported by the scan as full_tensor_missing.
        let names = c
            .full_tensors
            .iter()
            .filter_map(|n| shape_of.get(n.as_str()).map(|&saved| (n.as_str(), saved)));
        check_full_tensors(names, expected, &mut unexpected, &mut mismatches);
    }
    let target_parameters = scan
        .config
        .as_ref()
        .map_or(&[][..], |c| c.target_parameters.as_slice());
    for t in promised(scan, expected) {
        if !covered.contains(t.path.as_str()) {
            match fused_key(&t.path)
                .and_then(|k| crate::infer::param_wrapper::saved_names(&k, target_parameters))
            {
                Some(names) if peft => missing.extend(names),
                _ => missing.extend(names_for(&t.path, t, peft, dora)),
            }
        }
    }
    if let Some(p) = prefix_hint(&unmatched, &lookup) {
        problems.push(p);
    }
    Ok(finish(missing, unexpected, mismatches, problems))
}

/// Full (non-LoRA) tensors against the model's parameters of the same names.
fn check_full_tensors<'n>(
    tensors: impl Iterator<Item = (&'n str, &'n [u64])>,
    expected: &Expected,
    unexpected: &mut Vec<String>,
    mismatches: &mut Vec<ShapeMismatch>,
) {
    let params = expected.param_shapes();
    for (name, saved) in tensors {
        match params.get(name) {
            None => unexpected.push(name.to_string()),
            Some(&shape) if shape != saved => mismatches.push(ShapeMismatch {
                key: name.to_string(),
                saved: saved.to_vec(),
                expected: shape.to_vec(),
            }),
            Some(_) => {}
        }
    }
}

fn finish(
    mut missing: Vec<String>,
    mut unexpected: Vec<String>,
    mut shape_mismatch: Vec<ShapeMismatch>,
    mut problems: Vec<Problem>,
) -> Report {
    use crate::naming::natural::{natural_cmp, sort_natural};
    sort_natural(&mut missing, String::as_str);
    missing.dedup();
    sort_natural(&mut unexpected, String::as_str);
    unexpected.dedup();
    sort_natural(&mut shape_mismatch, |m| m.key.as_str());
    problems.sort_by(|a, b| {
        a.severity.cmp(&b.severity).then_with(|| {
            natural_cmp(
                a.path.as_deref().unwrap_or(""),
                b.path.as_deref().unwrap_or(""),
            )
        })
    });
    let ok = missing.is_empty()
        && unexpected.is_empty()
        && shape_mismatch.is_empty()
        && !problems.iter().any(|p| p.severity == Severity::Error);
    Report {
        ok,
        missing,
        unexpected,
        shape_mismatch,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::expect::{expected_shape, partner};
    use crate::infer::Kind;
    use crate::naming::layout::Layout;
    use crate::naming::leaves::{Family, Leaf, Slot};

    #[test]
    fn partners() {
        assert_eq!(partner("a.lora_a").as_deref(), Some("a.lora_b"));
        assert_eq!(
            partner("a.lora_B.weight").as_deref(),
            Some("a.lora_A.weight")
        );
        assert_eq!(
            partner("a.lora_embedding_A").as_deref(),
            Some("a.lora_embedding_B")
        );
        assert_eq!(partner("a.m"), None);
    }

    #[test]
    fn expected_shapes_per_family() {
        let lin = Target {
            path: "x".into(),
            kind: Kind::Linear,
            in_dims: Some(64),
            out_dims: Some(32),
            num_experts: None,
        };
        let sw = Target {
            kind: Kind::Switch,
            num_experts: Some(4),
            ..lin.clone()
        };
        let emb = Target {
            kind: Kind::Embedding,
            in_dims: Some(100),
            out_dims: Some(16),
            ..lin.clone()
        };
        let s = Slot::Single;
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::A, s, Layout::MlxLinear, &lin, 8),
            Some(smallvec::smallvec![64, 8])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::B, s, Layout::MlxLinear, &lin, 8),
            Some(smallvec::smallvec![8, 32])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::M, s, Layout::MlxLinear, &lin, 8),
            Some(smallvec::smallvec![32])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::A, s, Layout::MlxSwitch, &sw, 8),
            Some(smallvec::smallvec![4, 8, 64])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::A, s, Layout::MlxSwitchLegacy, &sw, 8),
            Some(smallvec::smallvec![32, 64])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::B, s, Layout::MlxSwitch, &sw, 8),
            Some(smallvec::smallvec![4, 32, 8])
        );
        assert_eq!(
            expected_shape(Family::Mlx, Leaf::M, s, Layout::MlxEmbedding, &emb, 8),
            Some(smallvec::smallvec![100])
        );
        assert_eq!(
            expected_shape(Family::Peft, Leaf::A, s, Layout::PeftLinear, &lin, 8),
            Some(smallvec::smallvec![8, 64])
        );
        assert_eq!(
            expected_shape(
                Family::PeftEmbedding,
                Leaf::B,
                s,
                Layout::PeftEmbedding,
                &emb,
                8
            ),
            Some(smallvec::smallvec![16, 8])
        );
        assert_eq!(
            expected_shape(
                Family::Peft,
                Leaf::B,
                Slot::Expert(1),
                Layout::PeftPerExpert,
                &sw,
                8
            ),
            Some(smallvec::smallvec![32, 8])
        );
    }
}
