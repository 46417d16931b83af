//! The record of one inferred module, with what each of its factors is and a small table of their
//! shapes (so `check` reads no tensor entry but those it reports).
//!
//! May use: `naming`, `read::table`.

use smallvec::SmallVec;

use crate::infer::{Kind, TensorView, Variant};
use crate::naming::layout::Layout;
use crate::naming::leaves::{Family, Leaf, Slot};
use crate::read::table::Shape;

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
    pub layout: Layout,
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
pub(crate) const INLINE_FACTORS: usize = 4;

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
pub(crate) fn shape_table(
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

impl Module {
    /// `(tensor index, leaf, list or expert index)` of each of its tensors, in `tensor_ids` order.
    pub fn factors(&self) -> impl Iterator<Item = (u32, Leaf, Option<u64>)> + '_ {
        self.tensor_ids.iter().zip(&self.places).map(|(&i, p)| {
            let index = match p.slot {
                Slot::Single => None,
                Slot::Fused(n) => Some(u64::from(n)),
                Slot::Expert(e) => Some(e),
            };
            (i, p.leaf, index)
        })
    }
}
