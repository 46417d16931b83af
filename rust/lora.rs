//! Grouping tensors into LoRA modules and inferring each module's kind, layout, rank and dims.
//!
//! The family of a factor (and so its orientation) is decided by its leaf name; shapes are only a
//! consistency check, so square factors cannot confuse it. Every layout of the formats reference
//! is recognised: mlx-lm LoRA/DoRA linear, switch (3-D and the legacy 2-D `lora_a`) and embedding,
//! layer-wrapped `.lora_a.weight`, AFM7 fused list leaves, mlx-vlm legacy `.A`/`.B`, and PEFT
//! linear, embedding, DoRA magnitude, per-expert keys and `target_parameters` wrappers.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::Serialize;
use smallvec::SmallVec;

use crate::dtype::Dtype;
use crate::header::Shape;
use crate::problem::{Problem, Severity};

/// The PEFT prefix that module paths are reported without.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// What a LoRA module adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A dense linear layer.
    Linear,
    /// Stacked experts (mlx `SwitchLinear`, or PEFT per-expert keys grouped).
    Switch,
    /// An embedding table.
    Embedding,
}

impl Kind {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Switch => "switch",
            Self::Embedding => "embedding",
        }
    }
}

/// LoRA or DoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Plain low-rank update.
    Lora,
    /// Weight-decomposed (has a magnitude vector).
    Dora,
}

impl Variant {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lora => "lora",
            Self::Dora => "dora",
        }
    }
}

/// The on-disk family of a factor, decided by its leaf name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `lora_a` / `lora_b` / `m` (mlx-lm).
    Mlx,
    /// `lora_a.weight` / `lora_b.weight` (halves that are `nn.Linear` layers).
    MlxLayer,
    /// `lora_a.N` / `lora_b.N` (list-valued leaves, e.g. mlx-lm's AFM7 fused QKV).
    MlxFused,
    /// `A` / `B` (mlx-vlm before 0.6).
    MlxVlmLegacy,
    /// `lora_A.weight` / `lora_B.weight` / `lora_magnitude_vector` (PEFT).
    Peft,
    /// `lora_embedding_A` / `lora_embedding_B` (PEFT embeddings).
    PeftEmbedding,
}

impl Family {
    /// Whether the family belongs to PEFT's naming.
    pub fn is_peft(self) -> bool {
        matches!(self, Self::Peft | Self::PeftEmbedding)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Leaf {
    A,
    B,
    M,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Slot {
    Single,
    Fused(u32),
    Expert(u64),
}

/// A tensor as the inference sees it.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Full name, as stored.
    pub name: &'a str,
    /// Dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [u64],
}

/// One inferred LoRA module. Its tensors are kept as indices into the scan's tensor list; the
/// names are resolved only when they are asked for.
#[derive(Debug, Clone)]
pub struct Module {
    /// Dotted module path, without the PEFT `base_model.model.` prefix.
    pub path: String,
    /// What it adapts.
    pub kind: Kind,
    /// LoRA or DoRA.
    pub variant: Variant,
    /// The on-disk layout (orientation) of its factors.
    pub layout: &'static str,
    /// The rank, when the factors agree on one.
    pub rank: Option<u64>,
    /// Input features (vocabulary size for embeddings).
    pub in_dims: Option<u64>,
    /// Output features (embedding width for embeddings).
    pub out_dims: Option<u64>,
    /// Number of experts, for switch modules.
    pub num_experts: Option<u64>,
    /// The factors' dtype, or `mixed`.
    pub dtype: &'static str,
    /// The indices, in the scan's tensor list, of the tensors that make up the module, in
    /// natural order (by list or expert index, then A, B, magnitude).
    pub tensor_ids: TensorIds,
    /// What each of those tensors is (beside `tensor_ids`), as inference read its name and shape:
    /// `check` then reads no tensor entry but those it reports.
    pub(crate) places: SmallVec<[Place; INLINE_FACTORS]>,
    /// The shapes of the module's tensors, each listed once (or a few times), for `places`.
    pub(crate) shapes: SmallVec<[Shape; 2]>,
}

/// How many factors a module keeps without allocating: a module usually has two or three (A, B,
/// and a DoRA magnitude), and each allocation of a small scan costs more than its parsing when
/// the allocator's memory has left the cache between calls.
const INLINE_FACTORS: usize = 4;

/// A module's tensor indices, in natural order.
pub type TensorIds = SmallVec<[u32; INLINE_FACTORS]>;

/// A factor's family, leaf and slot, as its name says, and its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) family: Family,
    pub(crate) leaf: Leaf,
    pub(crate) slot: Slot,
    /// Where its shape is in the module's `shapes`.
    pub(crate) shape: u32,
}

/// How many of the last shapes a module's table is searched for a tensor's shape before it is
/// added (again): factors share a few shapes, and a module of odd shapes stays linear.
const RECENT_SHAPES: usize = 4;

/// The module's shape table and where each tensor's shape is in it (factors in `order`).
fn shape_table(
    order: &[(Slot, Leaf, usize, Family)],
    tensors: &[TensorView<'_>],
) -> (SmallVec<[Shape; 2]>, SmallVec<[Place; INLINE_FACTORS]>) {
    // Element by element: the shapes are short, and a slice comparison calls `memcmp`.
    let same = |a: &[u64], b: &[u64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y);
    let mut shapes: SmallVec<[Shape; 2]> = SmallVec::new();
    // The last shape each leaf had: factors in turn (A, B, A, B...) mostly repeat it.
    let mut last = [0usize; 3];
    let places = order
        .iter()
        .map(|&(slot, leaf, i, family)| {
            let shape = tensors[i].shape;
            let hint = last[leaf as usize];
            let at = if shapes.get(hint).is_some_and(|s| same(s, shape)) {
                hint
            } else {
                let from = shapes.len().saturating_sub(RECENT_SHAPES);
                if let Some(k) = shapes[from..].iter().position(|s| same(s, shape)) {
                    from + k
                } else {
                    shapes.push(Shape::from_slice(shape));
                    shapes.len() - 1
                }
            };
            last[leaf as usize] = at;
            Place {
                family,
                leaf,
                slot,
                // A module has fewer tensors than a scan, whose indices are 32-bit.
                shape: u32::try_from(at).unwrap_or(u32::MAX),
            }
        })
        .collect();
    (shapes, places)
}

/// The result of grouping.
#[derive(Debug, Default)]
pub struct Inference {
    /// Modules, in natural path order.
    pub modules: Vec<Module>,
    /// Indices of tensors that are not adapter parameters.
    pub non_adapter: Vec<usize>,
    /// Problems found in the tensors alone.
    pub problems: Vec<Problem>,
    /// Families seen among the adapter tensors.
    pub families: Vec<Family>,
}

#[cfg(test)]
fn split_suffix<'a>(name: &'a str, leaf: &str) -> Option<&'a str> {
    if name == leaf {
        return Some("");
    }
    name.strip_suffix(leaf)?.strip_suffix('.')
}

pub(crate) fn classify(name: &str) -> Option<(&str, Family, Leaf, Slot)> {
    // Dispatch on the last component (and the one before `weight`) instead of trying every
    // leaf as a suffix: this runs once per tensor.
    let (head, last) = split_last(name);
    let (path, family, leaf) = match last {
        "weight" => {
            let (path, inner) = split_last(head);
            match inner {
                "lora_A" => (path, Family::Peft, Leaf::A),
                "lora_B" => (path, Family::Peft, Leaf::B),
                "lora_magnitude_vector" => (path, Family::Peft, Leaf::M),
                "lora_a" => (path, Family::MlxLayer, Leaf::A),
                "lora_b" => (path, Family::MlxLayer, Leaf::B),
                _ => return None,
            }
        }
        "lora_embedding_A" => (head, Family::PeftEmbedding, Leaf::A),
        "lora_embedding_B" => (head, Family::PeftEmbedding, Leaf::B),
        "lora_magnitude_vector" => (head, Family::Peft, Leaf::M),
        "lora_a" => (head, Family::Mlx, Leaf::A),
        "lora_b" => (head, Family::Mlx, Leaf::B),
        "m" => (head, Family::Mlx, Leaf::M),
        "A" => (head, Family::MlxVlmLegacy, Leaf::A),
        "B" => (head, Family::MlxVlmLegacy, Leaf::B),
        _ => {
            // List-valued leaves: `<path>.lora_a.<i>`.
            if name.len() == last.len() || !last.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let i: u32 = last.parse().ok()?;
            let (path, inner) = split_last(head);
            let leaf = match inner {
                "lora_a" => Leaf::A,
                "lora_b" => Leaf::B,
                _ => return None,
            };
            return Some((path, Family::MlxFused, leaf, Slot::Fused(i)));
        }
    };
    Some((path, family, leaf, Slot::Single))
}

/// `(everything before the last dot, the last component)`; `("", s)` without a dot.
fn split_last(s: &str) -> (&str, &str) {
    // Last components are short: a plain backwards loop beats a vector search here.
    match s.bytes().rposition(|b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => ("", s),
    }
}

/// The suffix-by-suffix reading `classify` replaced, kept to check that they agree.
#[cfg(test)]
fn classify_by_suffix(name: &str) -> Option<(&str, Family, Leaf, Slot)> {
    const FIXED: &[(&str, Family, Leaf)] = &[
        ("lora_A.weight", Family::Peft, Leaf::A),
        ("lora_B.weight", Family::Peft, Leaf::B),
        ("lora_embedding_A", Family::PeftEmbedding, Leaf::A),
        ("lora_embedding_B", Family::PeftEmbedding, Leaf::B),
        ("lora_magnitude_vector.weight", Family::Peft, Leaf::M),
        ("lora_magnitude_vector", Family::Peft, Leaf::M),
        ("lora_a.weight", Family::MlxLayer, Leaf::A),
        ("lora_b.weight", Family::MlxLayer, Leaf::B),
        ("lora_a", Family::Mlx, Leaf::A),
        ("lora_b", Family::Mlx, Leaf::B),
        ("m", Family::Mlx, Leaf::M),
        ("A", Family::MlxVlmLegacy, Leaf::A),
        ("B", Family::MlxVlmLegacy, Leaf::B),
    ];
    for (leaf, family, role) in FIXED {
        if let Some(path) = split_suffix(name, leaf) {
            return Some((path, *family, *role, Slot::Single));
        }
    }
    // List-valued leaves: `<path>.lora_a.<i>`.
    let (head, last) = name.rsplit_once('.')?;
    let i: u32 = last
        .parse()
        .ok()
        .filter(|_| last.bytes().all(|b| b.is_ascii_digit()))?;
    for (leaf, role) in [("lora_a", Leaf::A), ("lora_b", Leaf::B)] {
        if let Some(path) = split_suffix(head, leaf) {
            return Some((path, Family::MlxFused, role, Slot::Fused(i)));
        }
    }
    None
}

/// Split `prefix.experts.<e>.rest` into (`prefix.experts.rest`, e).
#[cfg(test)]
pub(crate) fn expert_split(path: &str) -> Option<(String, u64)> {
    let mut out = String::new();
    expert_split_into(path, &mut out).map(|e| (out, e))
}

/// Find `experts.<digits>.` at a component boundary: (start of `experts.`, start and end of the
/// digits). memchr's substring search keeps this cheap on long names.
fn find_expert(path: &str) -> Option<(usize, usize, usize, u64)> {
    // One searcher for every call: building it is dearer than searching a module path.
    static EXPERTS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"experts."));
    let bytes = path.as_bytes();
    let mut from = 0;
    while let Some(pos) = EXPERTS.find(&bytes[from..]) {
        let start = from + pos;
        let digits = start + "experts.".len();
        let boundary = start == 0 || bytes[start - 1] == b'.';
        let len = bytes[digits..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = digits + len;
        if boundary && len > 0 && bytes.get(end) == Some(&b'.') && end + 1 < bytes.len() {
            if let Ok(e) = path[digits..end].parse() {
                return Some((start, digits, end, e));
            }
        }
        from = start + 1;
    }
    None
}

/// As [`expert_split`], writing the grouped path into `out` (reused across calls).
pub(crate) fn expert_split_into(path: &str, out: &mut String) -> Option<u64> {
    let split = ExpertSplit::of(path)?;
    split.grouped_into(path, out);
    Some(split.expert)
}

/// Where a path's expert index is: its first `experts.<digits>.` at a component boundary.
#[derive(Debug, Clone, Copy)]
struct ExpertSplit {
    /// Start of the digits (just after `experts.`).
    digits: usize,
    /// End of the digits (at their dot).
    end: usize,
    /// The expert index.
    expert: u64,
}

impl ExpertSplit {
    /// Find the split of `path`, if it has an expert index.
    fn of(path: &str) -> Option<Self> {
        let (_, digits, end, expert) = find_expert(path)?;
        Some(Self {
            digits,
            end,
            expert,
        })
    }

    /// Write the grouped path (without the index) into `out`.
    fn grouped_into(self, path: &str, out: &mut String) {
        out.clear();
        out.push_str(&path[..self.digits]);
        out.push_str(&path[self.end + 1..]);
    }
}

/// How many per-expert paths are remembered: the modules of an expert (gate, up, down...) come in
/// turn, then the next expert's.
const RECENT_EXPERT_KEYS: usize = 4;

/// Per-expert paths met lately, each split around its expert index (the bytes up to and
/// including `experts.`, and those after the index's dot), with the group of its grouped path.
#[derive(Debug, Default)]
pub(crate) struct RecentExperts<'a> {
    keys: smallvec::SmallVec<[(&'a str, &'a str, usize); RECENT_EXPERT_KEYS]>,
    /// The key tried first: the one after the last match, since the modules come in turn.
    next: usize,
}

impl<'a> RecentExperts<'a> {
    /// The group and expert index of `path` when it splits as a recent path did: the same bytes
    /// up to the index, then digits and a dot, then the same bytes after. Its first
    /// `experts.<digits>.` is then where [`ExpertSplit::of`] finds it (an earlier candidate would
    /// lie in the shared bytes, and failed there), so its grouped path is the recent one's: no
    /// search, no copy, no hash.
    fn find(&mut self, path: &str) -> Option<(usize, u64)> {
        let n = self.keys.len();
        (0..n).find_map(|k| {
            let at = (self.next + k) % n;
            let (prefix, rest, group) = self.keys[at];
            let tail = path.strip_prefix(prefix)?;
            let len = tail.bytes().take_while(u8::is_ascii_digit).count();
            let after = tail.get(len..)?.strip_prefix('.')?;
            if len == 0 || after != rest {
                return None;
            }
            let expert = tail[..len].parse().ok()?;
            self.next = (at + 1) % n;
            Some((group, expert))
        })
    }

    /// Remember `path`, split at `split`, as a member of `group`.
    fn remember(&mut self, path: &'a str, split: ExpertSplit, group: usize) {
        if self.keys.len() == RECENT_EXPERT_KEYS {
            self.keys.remove(0);
        }
        self.keys
            .push((&path[..split.digits], &path[split.end + 1..], group));
        self.next = 0;
    }

    /// The group and expert index of a per-expert `path` (None when it has no expert index):
    /// from a recent path's split, or else by splitting it, writing its grouped path into
    /// `scratch` and asking `group_of` for that path's group (remembered for the next paths).
    pub(crate) fn group(
        &mut self,
        path: &'a str,
        scratch: &mut String,
        group_of: impl FnOnce(&str) -> usize,
    ) -> Option<(usize, u64)> {
        if let Some(found) = self.find(path) {
            return Some(found);
        }
        let split = ExpertSplit::of(path)?;
        split.grouped_into(path, scratch);
        let group = group_of(scratch);
        self.remember(path, split, group);
        Some((group, split.expert))
    }
}

const EMBEDDING_NAMES: &[&str] = &[
    "embed_tokens",
    "wte",
    "word_embeddings",
    "tok_embeddings",
    "token_embedding",
    "token_embd",
    "embedding",
    "embeddings",
    "embed",
];

pub(crate) fn looks_like_embedding(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    EMBEDDING_NAMES.contains(&last)
}

/// One component of a dotted path, for natural ordering: numbers before names, numbers by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment<'a> {
    /// A component made of digits (value, then text so `01` and `1` stay distinct).
    Num(u64, &'a str),
    /// Any other component.
    Name(&'a str),
}

/// The natural sort key of a dotted path.
pub fn segments(path: &str) -> Vec<Segment<'_>> {
    path.split('.').map(segment).collect()
}

fn segment(p: &str) -> Segment<'_> {
    match number(p.as_bytes()) {
        Some(n) => Segment::Num(n, p),
        None => Segment::Name(p),
    }
}

/// A component that is a number: digits only, fitting in 64 bits.
fn number(part: &[u8]) -> Option<u64> {
    if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    part.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Compare dotted paths with numeric components compared as numbers (`layers.2` < `layers.10`).
/// The same order as comparing [`segments`], without allocating.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let mut ia = a.split('.');
    let mut ib = b.split('.');
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                if x != y {
                    let ord = segment(x).cmp(&segment(y));
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
            }
        }
    }
}

/// Sort by a path in natural order (stably), computing each key once.
pub fn sort_natural<T>(items: &mut Vec<T>, path: impl Fn(&T) -> &str) {
    if items.len() < 2 {
        return;
    }
    let order: Vec<usize> = if items.iter().any(|x| path(x).contains('\0')) {
        if items
            .windows(2)
            .all(|w| natural_cmp(path(&w[0]), path(&w[1])) != Ordering::Greater)
        {
            return;
        }
        let mut order: Vec<(Vec<Segment<'_>>, usize)> = items
            .iter()
            .enumerate()
            .map(|(i, x)| (segments(path(x)), i))
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, i)| i).collect()
    } else {
        // Every key in one buffer, compared as words.
        let mut keys = Vec::with_capacity(items.len() * 6);
        let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(items.len());
        for (i, x) in items.iter().enumerate() {
            let start = keys.len();
            natural_words(path(x), &mut keys);
            spans.push((start, keys.len(), i));
        }
        let key = |s: &(usize, usize, usize)| &keys[s.0..s.1];
        // Lists are often in natural order already: the keys then cost less to check than the
        // paths.
        if spans.windows(2).all(|w| key(&w[0]) <= key(&w[1])) {
            return;
        }
        spans.sort_by(|a, b| key(a).cmp(key(b)));
        spans.into_iter().map(|(_, _, i)| i).collect()
    };
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|i| slots[i].take()));
}

/// Append words that compare as [`segments`] do, for a path without NUL (a few words per path,
/// each compared in one instruction or two: comparing byte strings with long shared prefixes
/// costs several times more). Per component:
/// - a number: one word of tag 1, its value, and where its text falls among the texts of that
///   value (`0` < `00`, but `01` < `1`);
/// - a name: words of tag 2, each with 14 of its bytes (big-endian, zero-padded: a name holds no
///   NUL, so a shorter name sorts first), then how many of them are used, or 15 when the name
///   goes on in the next word.
fn natural_words(path: &str, out: &mut Vec<u128>) {
    const CHUNK: usize = 14;
    for part in path.as_bytes().split(|&b| b == b'.') {
        if let Some(n) = number(part) {
            let canonical = n.checked_ilog10().map_or(1, |l| l as usize + 1);
            let zeros = u32::try_from(part.len() - canonical).unwrap_or(u32::MAX);
            let among = if n == 0 { zeros } else { u32::MAX - zeros };
            out.push(1 << 120 | u128::from(n) << 32 | u128::from(among));
            continue;
        }
        let mut rest = part;
        loop {
            let (chunk, more) = rest.split_at(rest.len().min(CHUNK));
            let mut word = [0u8; 16];
            word[0] = 2;
            word[1..=chunk.len()].copy_from_slice(chunk);
            word[15] = if more.is_empty() {
                chunk.len() as u8
            } else {
                15
            };
            out.push(u128::from_be_bytes(word));
            if more.is_empty() {
                break;
            }
            rest = more;
        }
    }
}

/// A factor as grouping read it: its family, leaf, slot and index in the scan's tensor list.
type Member = (Family, Leaf, Slot, usize);

/// Options that change how tensors are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct InferOptions {
    /// The config lists PEFT `target_parameters` (fused-expert `ParamWrapper` adapters).
    pub peft_target_parameters: bool,
}

/// Module paths, in order of first appearance (files usually list modules in natural order,
/// which then needs no sort). A path is borrowed from the tensor names, or (per-expert paths with
/// the expert index taken out) owned.
type Paths<'a> = indexmap::IndexSet<Cow<'a, str>, foldhash::fast::RandomState>;

/// A run of tensors grouped by module path: every factor with its path's position, in tensor
/// order (one list for all: a list per module would be an allocation per module).
#[derive(Default)]
struct Grouping<'a> {
    paths: Paths<'a>,
    members: Vec<(u32, Member)>,
    non_adapter: Vec<usize>,
}

impl<'a> Grouping<'a> {
    /// The position of `path`, added if new (a String is allocated only for a new owned path).
    fn position(&mut self, path: &str, owned: impl FnOnce(&str) -> Cow<'a, str>) -> usize {
        match self.paths.get_index_of(path) {
            Some(index) => index,
            None => self.paths.insert_full(owned(path)).0,
        }
    }

    /// The factors put together by path (a counting sort, keeping tensor order).
    fn finish(self) -> Grouped<'a> {
        let mut start = vec![0usize; self.paths.len() + 1];
        for &(g, _) in &self.members {
            start[g as usize + 1] += 1;
        }
        for g in 0..self.paths.len() {
            start[g + 1] += start[g];
        }
        let mut factors = Vec::new();
        if let Some(&(_, filler)) = self.members.first() {
            factors = vec![filler; self.members.len()];
            let mut next = start.clone();
            for &(g, m) in &self.members {
                factors[next[g as usize]] = m;
                next[g as usize] += 1;
            }
        }
        Grouped {
            paths: self.paths,
            factors,
            start,
            non_adapter: self.non_adapter,
        }
    }
}

/// A run of tensors grouped by module path: each path's factors are `factors[start[g]..start[g +
/// 1]]`, in tensor order.
struct Grouped<'a> {
    paths: Paths<'a>,
    factors: Vec<Member>,
    start: Vec<usize>,
    non_adapter: Vec<usize>,
}

impl Grouped<'_> {
    fn factors(&self, g: usize) -> &[Member] {
        &self.factors[self.start[g]..self.start[g + 1]]
    }
}

/// Where a path's factors are: (run, the path's position in that run) for each run that has some.
type Located = SmallVec<[(u32, u32); 1]>;

/// The paths of all runs, in order of first appearance, each with where its factors are.
fn locate<'r>(runs: &'r [Grouped<'_>]) -> Vec<(&'r str, Located)> {
    if let [run] = runs {
        return run
            .paths
            .iter()
            .enumerate()
            .map(|(g, p)| (p.as_ref(), smallvec::smallvec![(0, g as u32)]))
            .collect();
    }
    let mut all: indexmap::IndexMap<&str, Located, foldhash::fast::RandomState> =
        indexmap::IndexMap::default();
    for (r, run) in runs.iter().enumerate() {
        for (g, p) in run.paths.iter().enumerate() {
            all.entry(p.as_ref())
                .or_default()
                .push((r as u32, g as u32));
        }
    }
    all.into_iter().collect()
}

/// A path's factors from every run, in tensor order (borrowed when one run has them all).
fn gather<'r>(runs: &'r [Grouped<'_>], located: &Located) -> Cow<'r, [Member]> {
    match located[..] {
        [(r, g)] => Cow::Borrowed(runs[r as usize].factors(g as usize)),
        _ => Cow::Owned(
            located
                .iter()
                .flat_map(|&(r, g)| runs[r as usize].factors(g as usize))
                .copied()
                .collect(),
        ),
    }
}

/// Group a run of tensors by module path (the first tensor's index is `offset`).
fn group<'a>(tensors: &[TensorView<'a>], offset: usize) -> Grouping<'a> {
    let mut grouping = Grouping {
        members: Vec::with_capacity(tensors.len()),
        ..Grouping::default()
    };
    let mut scratch = String::new();
    let mut recent = RecentExperts::default();
    // The previous tensor's module path (as classified), whether it was read as PEFT, its group
    // and expert: a module's factors are usually side by side, and then share all of these.
    let mut previous: Option<(&str, bool, usize, Option<u64>)> = None;
    for (i, t) in tensors.iter().enumerate() {
        let i = offset + i;
        let stripped = t.name.strip_prefix(PEFT_PREFIX).unwrap_or(t.name);
        let Some((path, family, leaf, mut slot)) = classify(stripped) else {
            grouping.non_adapter.push(i);
            continue;
        };
        let peft = family.is_peft();
        let (index, expert) = match previous {
            Some((p, was_peft, index, expert)) if p == path && was_peft == peft => (index, expert),
            _ => {
                let expert = if peft {
                    recent.group(path, &mut scratch, |key| {
                        grouping.position(key, |k| Cow::Owned(k.into()))
                    })
                } else {
                    None
                };
                match expert {
                    Some((index, e)) => (index, Some(e)),
                    None => (grouping.position(path, |_| Cow::Borrowed(path)), None),
                }
            }
        };
        previous = Some((path, peft, index, expert));
        if let Some(e) = expert {
            slot = Slot::Expert(e);
        }
        // Fewer paths than tensors, whose indices are 32-bit.
        grouping
            .members
            .push((index as u32, (family, leaf, slot, i)));
    }
    grouping
}

/// What one module path yields: a module, or tensors that are not adapter parameters after all.
/// (Not boxed: the outcomes are collected in one vector, and a box per module would be one more
/// allocation for each.)
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Module(Module, Vec<Problem>, SmallVec<[Family; 2]>),
    NotAdapter(Vec<usize>),
}

fn outcome(
    path: &str,
    members: &[Member],
    tensors: &[TensorView<'_>],
    opts: InferOptions,
) -> Outcome {
    // A lone `m`, `A` or `B` is some other parameter that happens to share the leaf name.
    let tentative = members
        .iter()
        .all(|(f, l, _, _)| (*f == Family::Mlx && *l == Leaf::M) || *f == Family::MlxVlmLegacy);
    let vlm_complete = members
        .iter()
        .any(|(f, l, _, _)| *f == Family::MlxVlmLegacy && *l == Leaf::A)
        && members
            .iter()
            .any(|(f, l, _, _)| *f == Family::MlxVlmLegacy && *l == Leaf::B);
    if tentative && !vlm_complete {
        return Outcome::NotAdapter(members.iter().map(|m| m.3).collect());
    }
    let mut fams: SmallVec<[Family; 2]> = SmallVec::new();
    for (f, l, _, _) in members {
        // `m` is shared by the mlx families; it does not make a module mixed.
        if *f == Family::Mlx && *l == Leaf::M {
            continue;
        }
        if !fams.contains(f) {
            fams.push(*f);
        }
    }
    if fams.is_empty() {
        fams.push(Family::Mlx);
    }
    let family = fams[0];
    let mut mixed = None;
    if fams.len() > 1 {
        mixed = Some(Problem::new(
            "mixed_formats",
            Severity::Error,
            Some(path),
            format!("the module's tensors mix naming conventions ({fams:?})"),
        ));
    }
    // Natural order without comparing strings: by list/expert index, then A, B, magnitude.
    let mut order: SmallVec<[(Slot, Leaf, usize, Family); INLINE_FACTORS]> =
        members.iter().map(|m| (m.2, m.1, m.3, m.0)).collect();
    order.sort_unstable_by_key(|m| (m.0, m.1, m.2));
    let ids: TensorIds = order.iter().map(|m| m.2 as u32).collect();
    let (mut module, mut problems) = analyze(path, family, &order, tensors, opts);
    // After the analysis, which read the same shapes in the same order.
    let (shapes, places) = shape_table(&order, tensors);
    module.tensor_ids = ids;
    module.places = places;
    module.shapes = shapes;
    if let Some(p) = mixed {
        problems.insert(0, p);
    }
    Outcome::Module(module, problems, fams)
}

/// Group tensors into modules and infer each one (in parallel: tensors are grouped in chunks,
/// then modules are analysed independently; the result does not depend on the split).
pub fn infer(tensors: &[TensorView<'_>], opts: InferOptions) -> Inference {
    const CHUNK: usize = 8192;
    let parallel = tensors.len() >= crate::par::MIN_PARALLEL;
    let chunks: Vec<(usize, &[TensorView<'_>])> = tensors
        .chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| (c * CHUNK, chunk))
        .collect();
    let runs = crate::par::map(&chunks, parallel, |&(offset, chunk)| {
        group(chunk, offset).finish()
    });
    let mut paths = locate(&runs);
    sort_natural(&mut paths, |p| p.0);
    let outcomes: Vec<Outcome> = crate::par::map(&paths, parallel, |(path, located)| {
        outcome(path, &gather(&runs, located), tensors, opts)
    });
    let mut non_adapter: Vec<usize> = runs.iter().flat_map(|r| &r.non_adapter).copied().collect();

    let mut out = Inference {
        modules: Vec::with_capacity(outcomes.len()),
        ..Inference::default()
    };
    let mut families: Vec<Family> = Vec::new();
    for o in outcomes {
        match o {
            Outcome::NotAdapter(ids) => non_adapter.extend(ids),
            Outcome::Module(module, problems, fams) => {
                for f in fams {
                    if !families.contains(&f) {
                        families.push(f);
                    }
                }
                out.problems.extend(problems);
                out.modules.push(module);
            }
        }
    }
    non_adapter.sort_unstable();
    out.non_adapter = non_adapter;
    out.families = families;
    out
}

struct Draft<'p> {
    path: &'p str,
    problems: Vec<Problem>,
}

impl Draft<'_> {
    fn error(&mut self, code: &'static str, message: String) {
        self.problems.push(Problem::new(
            code,
            Severity::Error,
            Some(self.path),
            message,
        ));
    }
    fn warn(&mut self, code: &'static str, message: String) {
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
    layout: &'static str,
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
fn analyze(
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

    let first = order.first().map(|x| tensors[x.2].dtype);
    let mut dtypes: smallvec::SmallVec<[Dtype; 2]> = first.into_iter().collect();
    if order.iter().any(|x| Some(tensors[x.2].dtype) != first) {
        dtypes = order.iter().map(|x| tensors[x.2].dtype).collect();
        dtypes.sort_unstable();
        dtypes.dedup();
    }
    let dtype = if dtypes.len() == 1 {
        dtypes[0].name()
    } else {
        d.warn(
            "mixed_dtypes",
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
    };

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
            d.error("degenerate_rank", "the rank is 0".into());
        } else if let (Some(i), Some(o)) = (dims.in_dims, dims.out_dims) {
            if r > i.min(o) {
                d.warn(
                    "degenerate_rank",
                    format!("rank {r} exceeds min(in_dims, out_dims) = {}", i.min(o)),
                );
            }
        }
    }
    if dims.kind == Kind::Switch && variant == Variant::Dora {
        d.error(
            "dora_on_switch",
            "a DoRA magnitude on a switch (MoE) module: mlx-lm has no DoRA for SwitchLinear".into(),
        );
    }
    (
        Module {
            path: path.to_string(),
            kind: dims.kind,
            variant,
            layout: dims.layout,
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

fn unpaired(d: &mut Draft<'_>, a: &[(Slot, usize)], b: &[(Slot, usize)], what: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        let (have, lack) = if a.is_empty() { ("B", "A") } else { ("A", "B") };
        d.error(
            "unpaired_factor",
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
            "orientation_flipped",
            format!(
                "factors {} and {} are in {other} under {names}; they must be transposed",
                shape_str(sa),
                shape_str(sb)
            ),
        );
        return (Some(fa), ra, rb);
    }
    d.error(
        "rank_mismatch",
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
    let layout_for = |kind: Kind| -> &'static str {
        match (family, kind) {
            (Family::Mlx, Kind::Switch) => "mlx_switch",
            (Family::Mlx, Kind::Embedding) => "mlx_embedding",
            (Family::MlxLayer, _) => "mlx_layer",
            (Family::MlxVlmLegacy, _) => "mlx_vlm_legacy",
            (Family::PeftEmbedding, _) => "peft_embedding",
            (Family::Peft, Kind::Switch) => "peft_param_wrapper",
            (Family::Peft, _) => "peft_linear",
            _ => "mlx_linear",
        }
    };
    let mut dims = Dims {
        kind: if family == Family::PeftEmbedding || looks_like_embedding(d.path) {
            Kind::Embedding
        } else {
            Kind::Linear
        },
        rank: None,
        in_dims: None,
        out_dims: None,
        num_experts: None,
        layout: "",
    };
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
        dims.layout = layout_for(dims.kind);
        return dims;
    }
    if a.len() > 1 || b.len() > 1 {
        d.error("unpaired_factor", "more than one A or B factor".into());
    }
    let sa = tensors[a[0].1].shape;
    let sb = tensors[b[0].1].shape;
    let standard = matches!(family, Family::Mlx | Family::MlxVlmLegacy);
    match (sa.len(), sb.len()) {
        (2, 2) => {
            let (rank, i, o) = pair_2d(d, sa, sb, standard);
            dims.rank = rank;
            dims.in_dims = Some(i);
            dims.out_dims = Some(o);
            if param_wrapper {
                // A (E*r, in), B (out, r*E): the expert count is not in the header.
                dims.rank = None;
                d.warn(
                    "rank_needs_expert_count",
                    format!(
                        "PEFT target_parameters factors {} and {} hold rank x experts = {}; the \
                         rank is that divided by the base model's expert count",
                        shape_str(sa),
                        shape_str(sb),
                        rank.map_or_else(|| "?".into(), |r| r.to_string())
                    ),
                );
            }
        }
        (3, 3) if family == Family::Mlx => {
            dims.kind = Kind::Switch;
            if sa[0] == sb[0] {
                dims.num_experts = Some(sa[0]);
            } else {
                d.error(
                    "expert_count_mismatch",
                    format!(
                        "lora_a {} has {} experts, lora_b {} has {}",
                        shape_str(sa),
                        sa[0],
                        shape_str(sb),
                        sb[0]
                    ),
                );
            }
            // (E, r, in) / (E, out, r): the PEFT orientation stacked per expert.
            let (rank, i, o) = pair_2d(d, &sa[1..], &sb[1..], false);
            dims.rank = rank;
            dims.in_dims = Some(i);
            dims.out_dims = Some(o);
        }
        (2, 3) if family == Family::Mlx => {
            dims.kind = Kind::Switch;
            let (e, o, r) = (sb[0], sb[1], sb[2]);
            dims.num_experts = Some(e);
            dims.out_dims = Some(o);
            dims.in_dims = Some(sa[1]);
            if e.checked_mul(r) == Some(sa[0]) {
                dims.rank = Some(r);
                dims.layout = "mlx_switch_legacy";
                d.warn(
                    "legacy_switch_layout",
                    format!(
                        "lora_a {} is the 2-D (experts*rank, in) layout of mlx-lm < 0.28.3; \
                         current mlx-lm expects ({e}, {r}, {}) and rejects it unless reshaped",
                        shape_str(sa),
                        sa[1]
                    ),
                );
            } else {
                d.error(
                    "rank_mismatch",
                    format!(
                        "lora_a {} is not (experts*rank, in) for lora_b {}",
                        shape_str(sa),
                        shape_str(sb)
                    ),
                );
            }
        }
        _ => {
            d.error(
                "bad_factor_shape",
                format!(
                    "factor shapes {} and {} fit no known layout",
                    shape_str(sa),
                    shape_str(sb)
                ),
            );
        }
    }
    if family == Family::MlxLayer {
        d.warn(
            "layer_wrapped_factors",
            "factors are stored as `lora_a.weight`/`lora_b.weight` (layer-wrapped halves); \
             mlx-lm's load_adapters rejects `.weight` leaves"
                .into(),
        );
    }
    if let Some(&(_, mi)) = m.first() {
        let sm = tensors[mi].shape;
        if m.len() > 1 || sm.len() != 1 {
            d.error(
                "bad_factor_shape",
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
                    "bad_factor_shape",
                    format!(
                        "the DoRA magnitude has {n} entries; the module has in_dims {} and out_dims {}",
                        dims.in_dims.map_or_else(|| "?".into(), |x| x.to_string()),
                        dims.out_dims.map_or_else(|| "?".into(), |x| x.to_string())
                    ),
                );
            }
        }
    }
    if dims.layout.is_empty() {
        dims.layout = layout_for(dims.kind);
    }
    dims
}

fn fused(
    d: &mut Draft<'_>,
    a: &[(Slot, usize)],
    b: &[(Slot, usize)],
    tensors: &[TensorView<'_>],
) -> Dims {
    let mut dims = Dims {
        kind: Kind::Linear,
        rank: None,
        in_dims: None,
        out_dims: None,
        num_experts: None,
        layout: "mlx_fused",
    };
    if unpaired(d, a, b, "") {
        return dims;
    }
    let ia: Vec<_> = a.iter().map(|x| x.0).collect();
    let ib: Vec<_> = b.iter().map(|x| x.0).collect();
    if ia != ib {
        d.error(
            "unpaired_factor",
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
                "bad_factor_shape",
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
                "rank_mismatch",
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
    let mut dims = Dims {
        kind: Kind::Switch,
        rank: None,
        in_dims: None,
        out_dims: None,
        num_experts: None,
        layout: "peft_per_expert",
    };
    let experts = join_experts(a, b);
    if !m.is_empty() {
        d.error(
            "dora_on_switch",
            "DoRA magnitudes on per-expert modules cannot be stacked into a switch layer".into(),
        );
    }
    let count = experts.last().map_or(0, |x| x.0.saturating_add(1));
    dims.num_experts = Some(count);
    // Gaps as ranges: an expert index can be any number, so they are never listed one by one.
    let mut missing: Vec<(u64, u64)> = Vec::new();
    let mut next = 0;
    for &(e, _, _) in &experts {
        if e > next {
            missing.push((next, e - 1));
        }
        next = e.saturating_add(1);
    }
    if !missing.is_empty() {
        let n: u64 = missing.iter().map(|(a, b)| b - a + 1).sum();
        d.error(
            "missing_experts",
            format!(
                "{n} of {count} experts have no factors: {}",
                ranges_str(&missing)
            ),
        );
    }
    let mut seen: Option<(Option<u64>, u64, u64)> = None;
    let mut disagree = Vec::new();
    let mut half = Vec::new();
    for &(e, ia, ib) in &experts {
        let (Some(ia), Some(ib)) = (ia, ib) else {
            half.push(e);
            continue;
        };
        let (sa, sb) = (tensors[ia].shape, tensors[ib].shape);
        if sa.len() != 2 || sb.len() != 2 {
            d.error(
                "bad_factor_shape",
                format!(
                    "expert {e}: factors {} and {} are not 2-D",
                    shape_str(sa),
                    shape_str(sb)
                ),
            );
            return dims;
        }
        let mut sub = Draft {
            path: d.path,
            problems: Vec::new(),
        };
        let got = pair_2d(&mut sub, sa, sb, false);
        match &seen {
            None => {
                d.problems.extend(sub.problems);
                seen = Some(got);
            }
            Some(first) if *first != got => disagree.push(e),
            Some(_) => {}
        }
    }
    if !half.is_empty() {
        d.error(
            "unpaired_factor",
            format!(
                "experts {} have only one of lora_A/lora_B",
                compress_ranges(&half)
            ),
        );
    }
    if !disagree.is_empty() {
        d.error(
            "rank_mismatch",
            format!(
                "experts {} differ in rank or dims from the first expert",
                compress_ranges(&disagree)
            ),
        );
    }
    if let Some((r, i, o)) = seen {
        dims.rank = r;
        dims.in_dims = Some(i);
        dims.out_dims = Some(o);
    }
    dims
}

/// The experts of a module's A and B factors (each sorted by slot, then tensor index), in expert
/// order: (expert, its A, its B). Of two factors for one expert and leaf, the later tensor counts.
fn join_experts(
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

/// `[0,1,2,5,7,8]` -> `0-2, 5, 7-8` (sorted values; see [`ranges_str`] for long lists).
pub fn compress_ranges(values: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &v in values {
        match ranges.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(v) => last.1 = v,
            _ => ranges.push((v, v)),
        }
    }
    ranges_str(&ranges)
}

/// Inclusive ranges as `0-2, 5, 7-8`; past [`MAX_LISTED_RANGES`], the rest is counted.
pub fn ranges_str(ranges: &[(u64, u64)]) -> String {
    let mut parts: Vec<String> = ranges
        .iter()
        .take(MAX_LISTED_RANGES)
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect();
    if ranges.len() > MAX_LISTED_RANGES {
        parts.push(format!(
            "and {} more ranges",
            ranges.len() - MAX_LISTED_RANGES
        ));
    }
    parts.join(", ")
}

/// How many ranges a message lists.
pub const MAX_LISTED_RANGES: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;
    use std::collections::HashMap;

    fn run(spec: &[(&str, &str, &[u64])]) -> Inference {
        run_with(spec, InferOptions::default())
    }

    fn run_with(spec: &[(&str, &str, &[u64])], opts: InferOptions) -> Inference {
        let views: Vec<TensorView<'_>> = spec
            .iter()
            .map(|(n, d, s)| TensorView {
                name: n,
                dtype: Dtype::from_name(d).unwrap(),
                shape: s,
            })
            .collect();
        infer(&views, opts)
    }

    fn codes(inf: &Inference) -> Vec<&'static str> {
        inf.problems.iter().map(|p| p.code).collect()
    }

    #[test]
    fn mlx_linear_square_factors_follow_the_names() {
        let inf = run(&[
            ("model.layers.0.self_attn.q_proj.lora_a", "F32", &[8, 8]),
            ("model.layers.0.self_attn.q_proj.lora_b", "F32", &[8, 8]),
        ]);
        assert!(inf.problems.is_empty());
        let m = &inf.modules[0];
        assert_eq!(m.path, "model.layers.0.self_attn.q_proj");
        assert_eq!(
            (m.kind, m.variant, m.rank),
            (Kind::Linear, Variant::Lora, Some(8))
        );
        assert_eq!(m.layout, "mlx_linear");
    }

    #[test]
    fn mlx_linear_and_flipped() {
        let inf = run(&[
            ("a.q_proj.lora_a", "F32", &[64, 4]),
            ("a.q_proj.lora_b", "F32", &[4, 32]),
            ("a.v_proj.lora_a", "F32", &[4, 64]),
            ("a.v_proj.lora_b", "F32", &[32, 4]),
        ]);
        let q = &inf.modules[0];
        assert_eq!(
            (q.rank, q.in_dims, q.out_dims),
            (Some(4), Some(64), Some(32))
        );
        assert_eq!(codes(&inf), vec!["orientation_flipped"]);
        assert_eq!(inf.problems[0].path.as_deref(), Some("a.v_proj"));
    }

    #[test]
    fn transposed_factors_of_a_square_weight_are_flipped_not_rank_64() {
        // in == out == 64, rank 4: the transposed pair chains both ways; the sane reading wins.
        let inf = run(&[("q.lora_a", "F32", &[4, 64]), ("q.lora_b", "F32", &[64, 4])]);
        assert_eq!(codes(&inf), vec!["orientation_flipped"]);
        let q = &inf.modules[0];
        assert_eq!(
            (q.rank, q.in_dims, q.out_dims),
            (Some(4), Some(64), Some(64))
        );
        // The PEFT names with mlx-oriented data, same story.
        let inf = run(&[
            ("q.lora_A.weight", "F32", &[64, 4]),
            ("q.lora_B.weight", "F32", &[4, 64]),
        ]);
        assert_eq!(codes(&inf), vec!["orientation_flipped"]);
        assert_eq!(inf.modules[0].rank, Some(4));
    }

    #[test]
    fn switch_layouts() {
        let inf = run(&[
            ("l.switch_mlp.up_proj.lora_a", "F32", &[4, 8, 64]),
            ("l.switch_mlp.up_proj.lora_b", "F32", &[4, 32, 8]),
            ("l.switch_mlp.down_proj.lora_a", "F32", &[32, 32]),
            ("l.switch_mlp.down_proj.lora_b", "F32", &[4, 64, 8]),
            ("l.switch_mlp.gate_proj.lora_a", "F32", &[4, 8, 64]),
            ("l.switch_mlp.gate_proj.lora_b", "F32", &[5, 32, 8]),
        ]);
        let by: HashMap<_, _> = inf.modules.iter().map(|m| (m.path.as_str(), m)).collect();
        let up = by["l.switch_mlp.up_proj"];
        assert_eq!(
            (
                up.kind,
                up.rank,
                up.in_dims,
                up.out_dims,
                up.num_experts,
                up.layout
            ),
            (
                Kind::Switch,
                Some(8),
                Some(64),
                Some(32),
                Some(4),
                "mlx_switch"
            )
        );
        let down = by["l.switch_mlp.down_proj"];
        assert_eq!(
            (
                down.rank,
                down.in_dims,
                down.out_dims,
                down.num_experts,
                down.layout
            ),
            (Some(8), Some(32), Some(64), Some(4), "mlx_switch_legacy")
        );
        assert!(codes(&inf).contains(&"legacy_switch_layout"));
        assert!(codes(&inf).contains(&"expert_count_mismatch"));
    }

    #[test]
    fn dora_embedding_and_linear() {
        let inf = run(&[
            ("model.embed_tokens.lora_a", "F32", &[100, 4]),
            ("model.embed_tokens.lora_b", "F32", &[4, 16]),
            ("model.embed_tokens.m", "F32", &[100]),
            ("x.proj.lora_a", "F32", &[16, 4]),
            ("x.proj.lora_b", "F32", &[4, 100]),
            ("x.proj.m", "F32", &[100]),
            ("y.emb.lora_a", "F32", &[16, 4]),
            ("y.emb.lora_b", "F32", &[4, 20]),
            ("y.emb.m", "F32", &[7]),
            ("model.norm.m", "F32", &[7]),
        ]);
        assert_eq!(inf.modules[0].path, "model.embed_tokens");
        assert_eq!(inf.modules[0].kind, Kind::Embedding);
        assert_eq!(inf.modules[0].variant, Variant::Dora);
        let proj = inf.modules.iter().find(|m| m.path == "x.proj").unwrap();
        assert_eq!((proj.kind, proj.variant), (Kind::Linear, Variant::Dora));
        assert_eq!(codes(&inf), vec!["bad_factor_shape"]);
        // A lone `m` is not an adapter tensor.
        assert_eq!(inf.non_adapter.len(), 1);
    }

    #[test]
    fn experts_join_in_order_with_gaps_and_one_sided_entries() {
        let e = |x: u64, i: usize| (Slot::Expert(x), i);
        // A's factors for expert 2 twice (the later tensor counts); B lacks expert 0, has 5.
        let a = [(Slot::Single, 9), e(0, 1), e(2, 3), e(2, 4), e(3, 6)];
        let b = [e(2, 7), e(3, 8), e(5, 2)];
        assert_eq!(
            join_experts(&a, &b),
            vec![
                (0, Some(1), None),
                (2, Some(4), Some(7)),
                (3, Some(6), Some(8)),
                (5, None, Some(2)),
            ]
        );
        assert!(join_experts(&[], &[]).is_empty());
        let top = [e(u64::MAX, 0)];
        assert_eq!(join_experts(&top, &top), vec![(u64::MAX, Some(0), Some(0))]);
    }

    #[test]
    fn a_huge_expert_index_is_reported_as_ranges_without_listing_them() {
        let name = |e: u64, l: &str| {
            format!("base_model.model.model.layers.0.mlp.experts.{e}.down_proj.lora_{l}.weight")
        };
        let mut spec: Vec<(String, &str, Vec<u64>)> = Vec::new();
        for e in [0u64, 7, 1_000_000_000_000, u64::MAX] {
            spec.push((name(e, "A"), "F32", vec![4, 16]));
            spec.push((name(e, "B"), "F32", vec![8, 4]));
        }
        let spec: Vec<(&str, &str, &[u64])> = spec
            .iter()
            .map(|(n, d, s)| (n.as_str(), *d, s.as_slice()))
            .collect();
        let inf = run(&spec);
        let m = &inf.modules[0];
        assert_eq!(m.num_experts, Some(u64::MAX));
        assert_eq!(codes(&inf), vec!["missing_experts"]);
        let gaps = u64::MAX - 3; // 2^64 indices, 4 present
        assert_eq!(
            inf.problems[0].message,
            format!(
                "{gaps} of {} experts have no factors: 1-6, 8-999999999999, 1000000000001-{}",
                u64::MAX,
                u64::MAX - 1
            )
        );
    }

    #[test]
    fn long_range_lists_are_cut() {
        let values: Vec<u64> = (0..200).map(|x| x * 2).collect();
        let text = compress_ranges(&values);
        assert!(text.starts_with("0, 2, 4, "));
        assert!(text.ends_with(", 126, and 136 more ranges"), "{text}");
        assert_eq!(
            compress_ranges(&[u64::MAX - 1, u64::MAX]),
            format!("{}-{}", u64::MAX - 1, u64::MAX)
        );
    }

    #[test]
    fn peft_keys_and_per_expert_grouping() {
        let mut spec: Vec<(String, &str, Vec<u64>)> = vec![
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into(),
                "BF16",
                vec![8, 64],
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight".into(),
                "BF16",
                vec![32, 8],
            ),
            (
                "base_model.model.model.embed_tokens.lora_embedding_A".into(),
                "BF16",
                vec![8, 100],
            ),
            (
                "base_model.model.model.embed_tokens.lora_embedding_B".into(),
                "BF16",
                vec![64, 8],
            ),
            (
                "base_model.model.model.embed_tokens.base_layer.weight".into(),
                "BF16",
                vec![100, 64],
            ),
        ];
        for e in [0u64, 1, 3] {
            spec.push((
                format!("base_model.model.model.layers.0.mlp.experts.{e}.up_proj.lora_A.weight"),
                "BF16",
                vec![8, 64],
            ));
            spec.push((
                format!("base_model.model.model.layers.0.mlp.experts.{e}.up_proj.lora_B.weight"),
                "BF16",
                vec![16, 8],
            ));
        }
        let borrowed: Vec<(&str, &str, &[u64])> = spec
            .iter()
            .map(|(a, b, c)| (a.as_str(), *b, c.as_slice()))
            .collect();
        let inf = run(&borrowed);
        let by: HashMap<_, _> = inf.modules.iter().map(|m| (m.path.as_str(), m)).collect();
        let q = by["model.layers.0.self_attn.q_proj"];
        assert_eq!(
            (q.rank, q.in_dims, q.out_dims, q.layout),
            (Some(8), Some(64), Some(32), "peft_linear")
        );
        let emb = by["model.embed_tokens"];
        assert_eq!(
            (emb.kind, emb.rank, emb.in_dims, emb.out_dims),
            (Kind::Embedding, Some(8), Some(100), Some(64))
        );
        let ex = by["model.layers.0.mlp.experts.up_proj"];
        assert_eq!(
            (ex.kind, ex.num_experts, ex.rank, ex.layout),
            (Kind::Switch, Some(4), Some(8), "peft_per_expert")
        );
        assert_eq!(ex.tensor_ids.len(), 6);
        assert_eq!(codes(&inf), vec!["missing_experts"]);
        assert!(inf.problems[0].message.contains(": 2"));
        assert_eq!(inf.non_adapter.len(), 1);
    }

    proptest::proptest! {
        /// The dispatching `classify` reads every name as the suffix-by-suffix one does.
        #[test]
        fn classify_agrees_with_suffix_matching(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "lora_A", "lora_B", "lora_a", "lora_b", "weight", "m", "A", "B", "0", "12", "x",
                "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "experts", "",
                "q_proj", "4294967296", "07",
            ]), 0..5)
        ) {
            let name = parts.join(".");
            proptest::prop_assert_eq!(classify(&name), classify_by_suffix(&name), "{}", name);
        }
    }

    #[test]
    fn unpaired_and_rank_mismatch() {
        let inf = run(&[
            ("p.lora_a", "F32", &[8, 4]),
            ("q.lora_a", "F32", &[8, 4]),
            ("q.lora_b", "F32", &[3, 5]),
        ]);
        assert_eq!(codes(&inf), vec!["unpaired_factor", "rank_mismatch"]);
        assert_eq!(inf.modules[1].rank, None);
    }

    #[test]
    fn layer_wrapped_fused_and_vlm_legacy() {
        let inf = run(&[
            ("a.lora_a.weight", "F32", &[4, 64]),
            ("a.lora_b.weight", "F32", &[32, 4]),
            ("b.qkv_proj.lora_a.0", "F32", &[64, 4]),
            ("b.qkv_proj.lora_a.1", "F32", &[64, 4]),
            ("b.qkv_proj.lora_b.0", "F32", &[4, 64]),
            ("b.qkv_proj.lora_b.1", "F32", &[4, 16]),
            ("language_model.c.A", "F32", &[64, 10]),
            ("language_model.c.B", "F32", &[10, 64]),
        ]);
        let by: HashMap<_, _> = inf.modules.iter().map(|m| (m.path.as_str(), m)).collect();
        assert_eq!(
            (by["a"].rank, by["a"].in_dims, by["a"].layout),
            (Some(4), Some(64), "mlx_layer")
        );
        assert_eq!(
            (by["b.qkv_proj"].rank, by["b.qkv_proj"].out_dims),
            (Some(4), Some(80))
        );
        assert_eq!(
            (by["language_model.c"].rank, by["language_model.c"].layout),
            (Some(10), "mlx_vlm_legacy")
        );
        assert_eq!(codes(&inf), vec!["layer_wrapped_factors"]);
    }

    #[test]
    fn param_wrapper_needs_expert_count() {
        let inf = run_with(
            &[
                (
                    "base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight",
                    "F32",
                    &[32, 64],
                ),
                (
                    "base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight",
                    "F32",
                    &[256, 32],
                ),
            ],
            InferOptions {
                peft_target_parameters: true,
            },
        );
        let m = &inf.modules[0];
        assert_eq!(
            (m.kind, m.rank, m.layout),
            (Kind::Switch, None, "peft_param_wrapper")
        );
        assert_eq!(codes(&inf), vec!["rank_needs_expert_count"]);
    }

    proptest::proptest! {
        /// Grouping (which reuses the split of recent per-expert paths) puts every tensor where
        /// splitting each path on its own would, whether the tensors are grouped in one run or
        /// in two appended.
        #[test]
        fn grouping_matches_splitting_each_path(
            split in 0usize..40,
            items in proptest::collection::vec((
                proptest::sample::select(vec!["m.", "m.experts.", "xexperts.", "m.experts.7.experts.", "n.experts.9x."]),
                proptest::sample::select(vec!["0", "1", "01", "12", "", "99999999999999999999", "3x"]),
                proptest::sample::select(vec![".gate_proj.", ".up_proj.", ".", ".experts.2.down."]),
                proptest::sample::select(vec!["lora_A.weight", "lora_B.weight", "lora_a"]),
            ), 0..40),
        ) {
            let names: Vec<String> = items
                .iter()
                .map(|(a, e, b, leaf)| format!("{PEFT_PREFIX}{a}{e}{b}{leaf}"))
                .collect();
            let views: Vec<TensorView<'_>> = names
                .iter()
                .map(|n| TensorView { name: n, dtype: Dtype::from_name("F32").unwrap(), shape: &[] })
                .collect();
            let one = [group(&views, 0).finish()];
            let at = split.min(views.len());
            let two = [group(&views[..at], 0).finish(), group(&views[at..], at).finish()];
            let mut naive: Vec<(String, Slot, usize)> = Vec::new();
            for (i, t) in views.iter().enumerate() {
                let stripped = t.name.strip_prefix(PEFT_PREFIX).unwrap();
                let Some((path, family, _, slot)) = classify(stripped) else { continue };
                let mut key = String::new();
                let split = if family.is_peft() { expert_split_into(path, &mut key) } else { None };
                match split {
                    Some(e) => naive.push((key, Slot::Expert(e), i)),
                    None => naive.push((path.to_string(), slot, i)),
                }
            }
            let mut paths_seen = Vec::new();
            for runs in [&one[..], &two[..]] {
                let located = locate(runs);
                let mut grouped: Vec<(String, Slot, usize)> = located
                    .iter()
                    .flat_map(|(k, l)| gather(runs, l).iter().map(|m| (k.to_string(), m.2, m.3)).collect::<Vec<_>>())
                    .collect();
                // Each path's factors are in tensor order.
                proptest::prop_assert!(grouped.windows(2).all(|w| w[0].0 != w[1].0 || w[0].2 < w[1].2));
                grouped.sort_by_key(|g| g.2);
                proptest::prop_assert_eq!(&grouped, &naive);
                let non_adapter: usize = runs.iter().map(|r| r.non_adapter.len()).sum();
                proptest::prop_assert_eq!(non_adapter + grouped.len(), views.len());
                paths_seen.push(located.iter().map(|l| l.0.to_string()).collect::<Vec<_>>());
            }
            proptest::prop_assert_eq!(&paths_seen[0], &paths_seen[1]);
        }

        /// Any mix of names and shapes infers without panicking, and every tensor is accounted for.
        #[test]
        fn inference_never_panics(
            items in proptest::collection::vec((
                proptest::sample::select(vec!["", "m.", "base_model.model.x.", "x.experts.3.", "y.experts.0.", "q.lora_a."]),
                proptest::sample::select(vec!["lora_a", "lora_b", "m", "A", "B", "lora_A.weight", "lora_B.weight",
                    "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "lora_a.weight", "lora_b.weight",
                    "lora_a.0", "lora_b.1", "weight", "é"]),
                proptest::collection::vec(0u64..6, 0..4),
            ), 0..12),
            param_wrapper in proptest::bool::ANY,
        ) {
            let names: Vec<String> = items.iter().map(|(p, l, _)| format!("{p}{l}")).collect();
            let mut seen = std::collections::HashSet::new();
            let views: Vec<TensorView<'_>> = items
                .iter()
                .zip(&names)
                .filter(|(_, n)| seen.insert(n.as_str()))
                .map(|((_, _, s), n)| TensorView { name: n, dtype: Dtype::from_name("F32").unwrap(), shape: s })
                .collect();
            let inf = infer(&views, InferOptions { peft_target_parameters: param_wrapper });
            let in_modules: usize = inf.modules.iter().map(|m| m.tensor_ids.len()).sum();
            proptest::prop_assert_eq!(in_modules + inf.non_adapter.len(), views.len());
        }
    }

    proptest::proptest! {
        /// The word keys order paths as their segments do, and as `natural_cmp` does.
        #[test]
        fn natural_keys_sort_as_segments(paths in proptest::collection::vec(
            proptest::collection::vec(proptest::sample::select(
                vec!["", "a", "b", "ab", "0", "00", "1", "01", "001", "10", "2", "256", "511", "18446744073709551615", "99999999999999999999", "é",
                     "abcdefghijklm", "abcdefghijklmn", "abcdefghijklmno", "abcdefghijklmn0", "abcdefghijklmnopqrstuvwxyzabcdef"]), 1..4)
                .prop_map(|parts: Vec<&str>| parts.join(".")),
            0..12)) {
            let mut by_key = paths.clone();
            sort_natural(&mut by_key, String::as_str);
            let mut by_segments = paths.clone();
            by_segments.sort_by(|a, b| segments(a).cmp(&segments(b)));
            proptest::prop_assert_eq!(&by_key, &by_segments);
            proptest::prop_assert!(by_key.windows(2).all(|w| natural_cmp(&w[0], &w[1]) != Ordering::Greater));
        }
    }

    #[test]
    fn natural_order_and_ranges() {
        let mut v = vec!["layers.10.q", "layers.2.q", "layers.2.k", "a"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["a", "layers.2.k", "layers.2.q", "layers.10.q"]);
        assert_eq!(compress_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(
            expert_split("m.layers.0.mlp.experts.12.w1"),
            Some(("m.layers.0.mlp.experts.w1".into(), 12))
        );
        assert_eq!(expert_split("m.myexperts.1.w1"), None);
    }
}
