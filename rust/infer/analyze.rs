//! One module's factors read into its kind, layout, rank, dims and experts, with every
//! disagreement between them reported.
//!
//! May use: `naming`, `read::dtype`, `problem`, `infer` (its records).

use crate::infer::module::Module;
use crate::infer::{InferOptions, Kind, TensorView, Variant};
use crate::naming::layout::Layout;
use crate::naming::leaves::{Family, Leaf, Slot};
use crate::naming::paths::looks_like_embedding;
use crate::naming::ranges::{compress_ranges, ranges_str};
use crate::problem::{Code, Problem, Severity};
use crate::read::dtype::Dtype;
use smallvec::SmallVec;

struct Draft<'p> {
    path: &'p str,
    problems: Vec<Problem>,
}

impl Draft<'_> {
    fn error(&mut self, code: Code, message: String) {
        self.problems.push(Problem::new(
            code,
            Severity::Error,
            Some(self.path),
            message,
        ));
    }
    fn warn(&mut self, code: Code, message: String) {
        self.problems.push(Problem::new(
            code,
            Severity::Warning,
            Some(self.path),
            message,
        ));
    }
}

struct Dims {
    kind: Kind,
    rank: Option<u64>,
    in_dims: Option<u64>,
    out_dims: Option<u64>,
    num_experts: Option<u64>,
    layout: Option<Layout>,
}

impl Dims {
    fn new(kind: Kind, layout: Option<Layout>) -> Self {
        Self {
            kind,
            rank: None,
            in_dims: None,
            out_dims: None,
            num_experts: None,
            layout,
        }
    }

    /// A pair's reading as [`pair_2d`] gives it: (rank, in, out).
    fn set_pair(&mut self, (rank, in_dims, out_dims): (Option<u64>, u64, u64)) {
        self.rank = rank;
        self.in_dims = Some(in_dims);
        self.out_dims = Some(out_dims);
    }
}

pub(crate) fn shape_str(s: &[u64]) -> String {
    format!(
        "({})",
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One leaf's factors of a module: (slot, tensor index), sorted.
type Picked = smallvec::SmallVec<[(Slot, usize); 2]>;

/// `order`: the module's factors as (slot, leaf, tensor index, family), sorted by slot, leaf and
/// index.
pub(crate) fn analyze(
    path: &str,
    family: Family,
    order: &[(Slot, Leaf, usize, Family)],
    tensors: &[TensorView<'_>],
    opts: InferOptions,
) -> (Module, Vec<Problem>) {
    let mut d = Draft {
        path,
        problems: Vec::new(),
    };
    // Sorted by (slot, index), as `order` is.
    let pick = |leaf: Leaf| -> Picked {
        order
            .iter()
            .filter(|m| m.1 == leaf)
            .map(|m| (m.0, m.2))
            .collect()
    };
    let a = pick(Leaf::A);
    let b = pick(Leaf::B);
    let m = pick(Leaf::M);

    let dtype = module_dtype(&mut d, order, tensors);
    let expert_slots = a
        .iter()
        .chain(&b)
        .any(|(s, _)| matches!(s, Slot::Expert(_)));
    let dims = if expert_slots {
        per_expert(&mut d, &a, &b, &m, tensors)
    } else if family == Family::MlxFused {
        fused(&mut d, &a, &b, tensors)
    } else {
        single(&mut d, family, &a, &b, &m, tensors, opts)
    };

    let variant = if m.is_empty() {
        Variant::Lora
    } else {
        Variant::Dora
    };
    if let Some(r) = dims.rank {
        if r == 0 {
            d.error(Code::DegenerateRank, "the rank is 0".into());
        } else if let (Some(i), Some(o)) = (dims.in_dims, dims.out_dims) {
            // A rank above one side is what mlx-lm itself makes of every router it wraps (rank 8
            // on a 64 -> 4 gate): only a rank above both sides is more than a dense update.
            if r > i.max(o) {
                d.warn(
                    Code::DegenerateRank,
                    format!(
                        "rank {r} exceeds both in_dims {i} and out_dims {o}: the factors hold more \
                         than a dense update of the weight"
                    ),
                );
            }
        }
    }
    if dims.kind == Kind::Switch && variant == Variant::Dora {
        d.error(
            Code::DoraOnSwitch,
            "a DoRA magnitude on a switch (MoE) module: mlx-lm has no DoRA for SwitchLinear".into(),
        );
    }
    (
        Module {
            path: path.to_string(),
            kind: dims.kind,
            variant,
            layout: dims.layout.unwrap_or(Layout::MlxLinear),
            rank: dims.rank,
            in_dims: dims.in_dims,
            out_dims: dims.out_dims,
            num_experts: dims.num_experts,
            dtype,
            tensor_ids: SmallVec::new(),
            places: SmallVec::new(),
            shapes: SmallVec::new(),
        },
        d.problems,
    )
}

/// The factors' one dtype, or `mixed` (with a warning naming them).
fn module_dtype(
    d: &mut Draft<'_>,
    order: &[(Slot, Leaf, usize, Family)],
    tensors: &[TensorView<'_>],
) -> &'static str {
    let first = order.first().map(|x| tensors[x.2].dtype);
    let mut dtypes: smallvec::SmallVec<[Dtype; 2]> = first.into_iter().collect();
    if order.iter().any(|x| Some(tensors[x.2].dtype) != first) {
        dtypes = order.iter().map(|x| tensors[x.2].dtype).collect();
        dtypes.sort_unstable();
        dtypes.dedup();
    }
    if dtypes.len() == 1 {
        dtypes[0].name()
    } else {
        d.warn(
            Code::MixedDtypes,
            format!(
                "the module's tensors have different dtypes ({})",
                dtypes
                    .iter()
                    .map(|x| x.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        "mixed"
    }
}

fn unpaired(d: &mut Draft<'_>, a: &[(Slot, usize)], b: &[(Slot, usize)], what: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        let (have, lack) = if a.is_empty() { ("B", "A") } else { ("A", "B") };
        d.error(
            Code::UnpairedFactor,
            format!("{what}has a LoRA {have} factor but no {lack} factor"),
        );
        return true;
    }
    false
}

/// Orientation check for a pair of 2-D factors. `standard` says whether the leaf names promise the
/// mlx orientation (in, r)/(r, out); otherwise they promise PEFT's (r, in)/(out, r).
fn pair_2d(d: &mut Draft<'_>, sa: &[u64], sb: &[u64], standard: bool) -> (Option<u64>, u64, u64) {
    // In the promised orientation: rank axis of a, of b; in from a; out from b.
    let (ra, rb, ia, ob) = if standard {
        (sa[1], sb[0], sa[0], sb[1])
    } else {
        (sa[0], sb[1], sa[1], sb[0])
    };
    // The other orientation's shared axis, and its in/out.
    let (fa, fb) = if standard {
        (sa[0], sb[1])
    } else {
        (sa[1], sb[0])
    };
    let named_fits = ra == rb;
    let flipped_fits = fa == fb;
    // Both chain when the base weight is square (in == out): then the named reading would put the
    // rank above both dims, which only a transposed pair does. Names decide when both are sane.
    let named_sane = named_fits && ra <= ia.min(ob);
    let flipped_sane = flipped_fits && fa <= ra.min(rb);
    if named_fits && (named_sane || !flipped_sane) {
        return (Some(ra), ia, ob);
    }
    if flipped_fits {
        let (names, other) = if standard {
            (
                "mlx names (lora_a (in, r), lora_b (r, out))",
                "PEFT orientation (r, in)/(out, r)",
            )
        } else {
            (
                "PEFT names (lora_A (r, in), lora_B (out, r))",
                "mlx orientation (in, r)/(r, out)",
            )
        };
        d.error(
            Code::OrientationFlipped,
            format!(
                "factors {} and {} are in {other} under {names}; they must be transposed",
                shape_str(sa),
                shape_str(sb)
            ),
        );
        return (Some(fa), ra, rb);
    }
    d.error(
        Code::RankMismatch,
        format!(
            "the factors {} and {} do not share a rank axis",
            shape_str(sa),
            shape_str(sb)
        ),
    );
    (None, ia, ob)
}

fn single(
    d: &mut Draft<'_>,
    family: Family,
    a: &[(Slot, usize)],
    b: &[(Slot, usize)],
    m: &[(Slot, usize)],
    tensors: &[TensorView<'_>],
    opts: InferOptions,
) -> Dims {
    let kind = if family == Family::PeftEmbedding || looks_like_embedding(d.path) {
        Kind::Embedding
    } else {
        Kind::Linear
    };
    let mut dims = Dims::new(kind, None);
    let param_wrapper = family == Family::Peft
        && opts.peft_target_parameters
        && (d.path.ends_with("experts") || d.path.ends_with("experts.base_layer"));
    if param_wrapper {
        dims.kind = Kind::Switch;
    }
    if unpaired(d, a, b, "") {
        let one = a.first().or(b.first()).map(|x| tensors[x.1].shape);
        if let Some(s) = one {
            if s.len() == 3 {
                dims.kind = Kind::Switch;
                dims.num_experts = Some(s[0]);
            }
        }
        dims.layout = Some(layout_for(family, dims.kind));
        return dims;
    }
    if a.len() > 1 || b.len() > 1 {
        d.error(Code::UnpairedFactor, "more than one A or B factor".into());
    }
    let sa = tensors[a[0].1].shape;
    let sb = tensors[b[0].1].shape;
    read_pair(d, family, sa, sb, param_wrapper, &mut dims);
    if family == Family::MlxLayer {
        d.warn(
            Code::LayerWrappedFactors,
            "factors are stored as `lora_a.weight`/`lora_b.weight` (layer-wrapped halves); \
             mlx-lm's load_adapters rejects `.weight` leaves"
                .into(),
        );
    }
    if let Some(&(_, mi)) = m.first() {
        read_magnitude(d, family, m.len(), tensors[mi].shape, &mut dims);
    }
    if dims.layout.is_none() {
        dims.layout = Some(layout_for(family, dims.kind));
    }
    dims
}

/// The layout of a single (not per-expert, not fused) module of `family` and `kind`.
fn layout_for(family: Family, kind: Kind) -> Layout {
    match (family, kind) {
        (Family::Mlx, Kind::Switch) => Layout::MlxSwitch,
        (Family::Mlx, Kind::Embedding) => Layout::MlxEmbedding,
        (Family::MlxLayer, _) => Layout::MlxLayer,
        (Family::MlxVlmLegacy, _) => Layout::MlxVlmLegacy,
        (Family::PeftEmbedding, _) => Layout::PeftEmbedding,
        (Family::Peft, Kind::Switch) => Layout::PeftParamWrapper,
        (Family::Peft, _) => Layout::PeftLinear,
        _ => Layout::MlxLinear,
    }
}

/// A module's one A and one B factor, read by their shapes.
fn read_pair(
    d: &mut Draft<'_>,
    family: Family,
    sa: &[u64],
    sb: &[u64],
    param_wrapper: bool,
    dims: &mut Dims,
) {
    let standard = matches!(family, Family::Mlx | Family::MlxVlmLegacy);
    match (sa.len(), sb.len()) {
        (2, 2) => read_2d(d, sa, sb, standard, param_wrapper, dims),
        (3, 3) if family == Family::Mlx => read_stacked_switch(d, sa, sb, dims),
        (2, 3) if family == Family::Mlx => read_legacy_switch(d, sa, sb, dims),
        _ => {
            d.error(
                Code::BadFactorShape,
                format!(
                    "factor shapes {} and {} fit no known layout",
                    shape_str(sa),
                    shape_str(sb)
                ),
            );
        }
    }
}

/// A 2-D pair; a PEFT `target_parameters` wrapper's rank is left to the config.
fn read_2d(
    d: &mut Draft<'_>,
    sa: &[u64],
    sb: &[u64],
    standard: bool,
    param_wrapper: bool,
    dims: &mut Dims,
) {
    let got = pair_2d(d, sa, sb, standard);
    dims.set_pair(got);
    if param_wrapper {
        // A (E*r, in), B (out, r*E): the expert count is not in the header.
        dims.rank = None;
        d.warn(
            Code::RankNeedsExpertCount,
            format!(
                "PEFT target_parameters factors {} and {} hold rank x experts = {}; the \
                 rank is that divided by the base model's expert count",
                shape_str(sa),
                shape_str(sb),
                got.0.map_or_else(|| "?".into(), |r| r.to_string())
            ),
        );
    }
}

/// mlx-lm's switch pair, (E, r, in) / (E, out, r): the PEFT orientation stacked per expert.
fn read_stacked_switch(d: &mut Draft<'_>, sa: &[u64], sb: &[u64], dims: &mut Dims) {
    dims.kind = Kind::Switch;
    if sa[0] == sb[0] {
        dims.num_experts = Some(sa[0]);
    } else {
        d.error(
            Code::ExpertCountMismatch,
            format!(
                "lora_a {} has {} experts, lora_b {} has {}",
                shape_str(sa),
                sa[0],
                shape_str(sb),
                sb[0]
            ),
        );
    }
    dims.set_pair(pair_2d(d, &sa[1..], &sb[1..], false));
}

/// The switch pair of mlx-lm < 0.28.3: a 2-D (E*r, in) lora_a with an (E, out, r) lora_b.
fn read_legacy_switch(d: &mut Draft<'_>, sa: &[u64], sb: &[u64], dims: &mut Dims) {
    dims.kind = Kind::Switch;
    let (e, o, r) = (sb[0], sb[1], sb[2]);
    dims.num_experts = Some(e);
    dims.out_dims = Some(o);
    dims.in_dims = Some(sa[1]);
    if e.checked_mul(r) == Some(sa[0]) {
        dims.rank = Some(r);
        dims.layout = Some(Layout::MlxSwitchLegacy);
        d.warn(
            Code::LegacySwitchLayout,
            format!(
                "lora_a {} is the 2-D (experts*rank, in) layout of mlx-lm < 0.28.3; \
                 current mlx-lm expects ({e}, {r}, {}) and rejects it unless reshaped",
                shape_str(sa),
                sa[1]
            ),
        );
    } else {
        d.error(
            Code::RankMismatch,
            format!(
                "lora_a {} is not (experts*rank, in) for lora_b {}",
                shape_str(sa),
                shape_str(sb)
            ),
        );
    }
}

/// The DoRA magnitude (`count` of them, the first of shape `sm`) against the module's dims; a
/// magnitude of in_dims entries on an mlx module makes it an embedding.
fn read_magnitude(d: &mut Draft<'_>, family: Family, count: usize, sm: &[u64], dims: &mut Dims) {
    if count > 1 || sm.len() != 1 {
        d.error(
            Code::BadFactorShape,
            format!(
                "the DoRA magnitude has shape {}, expected 1-D",
                shape_str(sm)
            ),
        );
    } else if dims.kind != Kind::Switch {
        let n = sm[0];
        if Some(n) == dims.out_dims {
            // PEFT's embedding magnitude is (D,) = out; mlx DoRALinear's is (out,).
        } else if Some(n) == dims.in_dims && family == Family::Mlx {
            // mlx DoRAEmbedding: one norm per token row.
            dims.kind = Kind::Embedding;
        } else {
            d.error(
                Code::BadFactorShape,
                format!(
                    "the DoRA magnitude has {n} entries; the module has in_dims {} and out_dims {}",
                    dims.in_dims.map_or_else(|| "?".into(), |x| x.to_string()),
                    dims.out_dims.map_or_else(|| "?".into(), |x| x.to_string())
                ),
            );
        }
    }
}

fn fused(
    d: &mut Draft<'_>,
    a: &[(Slot, usize)],
    b: &[(Slot, usize)],
    tensors: &[TensorView<'_>],
) -> Dims {
    let mut dims = Dims::new(Kind::Linear, Some(Layout::MlxFused));
    if unpaired(d, a, b, "") {
        return dims;
    }
    let ia: Vec<_> = a.iter().map(|x| x.0).collect();
    let ib: Vec<_> = b.iter().map(|x| x.0).collect();
    if ia != ib {
        d.error(
            Code::UnpairedFactor,
            format!(
                "list-valued factors differ: lora_a has {} entries, lora_b has {}",
                ia.len(),
                ib.len()
            ),
        );
        return dims;
    }
    let mut rank = None;
    let mut in_dims = None;
    let mut out = 0u64;
    for (x, y) in a.iter().zip(b) {
        let (sa, sb) = (tensors[x.1].shape, tensors[y.1].shape);
        if sa.len() != 2 || sb.len() != 2 {
            d.error(
                Code::BadFactorShape,
                format!(
                    "fused factors {} and {} are not 2-D",
                    shape_str(sa),
                    shape_str(sb)
                ),
            );
            return dims;
        }
        let (r, i, o) = pair_2d(d, sa, sb, true);
        if rank.is_some() && rank != r || in_dims.is_some() && in_dims != Some(i) {
            d.error(
                Code::RankMismatch,
                "the fused factors disagree on rank or in_dims".into(),
            );
            return dims;
        }
        rank = r;
        in_dims = Some(i);
        out = out.saturating_add(o);
    }
    dims.rank = rank;
    dims.in_dims = in_dims;
    dims.out_dims = Some(out);
    dims
}

fn per_expert(
    d: &mut Draft<'_>,
    a: &[(Slot, usize)],
    b: &[(Slot, usize)],
    m: &[(Slot, usize)],
    tensors: &[TensorView<'_>],
) -> Dims {
    let mut dims = Dims::new(Kind::Switch, Some(Layout::PeftPerExpert));
    let experts = join_experts(a, b);
    if !m.is_empty() {
        d.error(
            Code::DoraOnSwitch,
            "DoRA magnitudes on per-expert modules cannot be stacked into a switch layer".into(),
        );
    }
    let count = experts.last().map_or(0, |x| x.0.saturating_add(1));
    dims.num_experts = Some(count);
    report_missing_experts(d, &experts, count);
    let Some(pairs) = ExpertPairs::read(d, &experts, tensors) else {
        return dims;
    };
    pairs.report(d);
    if let Some(got) = pairs.first {
        dims.set_pair(got);
    }
    dims
}

/// The expert indices below `count` that have no factors at all.
fn report_missing_experts(
    d: &mut Draft<'_>,
    experts: &[(u64, Option<usize>, Option<usize>)],
    count: u64,
) {
    // Gaps as ranges: an expert index can be any number, so they are never listed one by one.
    let mut missing: Vec<(u64, u64)> = Vec::new();
    let mut next = 0;
    for &(e, _, _) in experts {
        if e > next {
            missing.push((next, e - 1));
        }
        next = e.saturating_add(1);
    }
    if !missing.is_empty() {
        let n: u64 = missing.iter().map(|(a, b)| b - a + 1).sum();
        d.error(
            Code::MissingExperts,
            format!(
                "{n} of {count} experts have no factors: {}",
                ranges_str(&missing)
            ),
        );
    }
}

/// The experts' pairs read against the first complete one.
struct ExpertPairs {
    /// The first complete pair's reading: (rank, in, out).
    first: Option<(Option<u64>, u64, u64)>,
    /// Experts whose pair reads otherwise.
    disagree: Vec<u64>,
    /// Experts with only one of A and B.
    half: Vec<u64>,
}

impl ExpertPairs {
    /// `None` (after an error) when a pair is not 2-D. Only the first pair's own problems are
    /// reported; the others only count as agreeing or not.
    fn read(
        d: &mut Draft<'_>,
        experts: &[(u64, Option<usize>, Option<usize>)],
        tensors: &[TensorView<'_>],
    ) -> Option<Self> {
        let mut out = Self {
            first: None,
            disagree: Vec::new(),
            half: Vec::new(),
        };
        for &(e, ia, ib) in experts {
            let (Some(ia), Some(ib)) = (ia, ib) else {
                out.half.push(e);
                continue;
            };
            let (sa, sb) = (tensors[ia].shape, tensors[ib].shape);
            if sa.len() != 2 || sb.len() != 2 {
                d.error(
                    Code::BadFactorShape,
                    format!(
                        "expert {e}: factors {} and {} are not 2-D",
                        shape_str(sa),
                        shape_str(sb)
                    ),
                );
                return None;
            }
            let mut sub = Draft {
                path: d.path,
                problems: Vec::new(),
            };
            let got = pair_2d(&mut sub, sa, sb, false);
            match &out.first {
                None => {
                    d.problems.extend(sub.problems);
                    out.first = Some(got);
                }
                Some(first) if *first != got => out.disagree.push(e),
                Some(_) => {}
            }
        }
        Some(out)
    }

    fn report(&self, d: &mut Draft<'_>) {
        if !self.half.is_empty() {
            d.error(
                Code::UnpairedFactor,
                format!(
                    "experts {} have only one of lora_A/lora_B",
                    compress_ranges(&self.half)
                ),
            );
        }
        if !self.disagree.is_empty() {
            d.error(
                Code::RankMismatch,
                format!(
                    "experts {} differ in rank or dims from the first expert",
                    compress_ranges(&self.disagree)
                ),
            );
        }
    }
}

/// The experts of a module's A and B factors (each sorted by slot, then tensor index), in expert
/// order: (expert, its A, its B). Of two factors for one expert and leaf, the later tensor counts.
pub(crate) fn join_experts(
    a: &[(Slot, usize)],
    b: &[(Slot, usize)],
) -> Vec<(u64, Option<usize>, Option<usize>)> {
    let experts = |v: &[(Slot, usize)]| -> Vec<(u64, usize)> {
        let mut out: Vec<(u64, usize)> = Vec::with_capacity(v.len());
        for &(slot, i) in v {
            if let Slot::Expert(e) = slot {
                match out.last_mut() {
                    Some(last) if last.0 == e => last.1 = i,
                    _ => out.push((e, i)),
                }
            }
        }
        out
    };
    let (a, b) = (experts(a), experts(b));
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let ea = a.get(i).map_or(u64::MAX, |x| x.0);
        let eb = b.get(j).map_or(u64::MAX, |x| x.0);
        let (fa, fb) = (i < a.len() && ea <= eb, j < b.len() && eb <= ea);
        let e = if fa { ea } else { eb };
        out.push((e, fa.then(|| a[i].1), fb.then(|| b[j].1)));
        i += usize::from(fa);
        j += usize::from(fb);
    }
    out
}
