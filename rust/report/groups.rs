//! Modules grouped by their path with the layer index taken out, for summaries: one row per
//! module kind and shape, with the layers it covers.
//!
//! May use: `naming`, `infer`, `scan`.

use std::collections::HashMap;

use crate::infer::Module;
use crate::naming::layout::Layout;
use crate::naming::paths::template_of;
use crate::scan::Scan;

/// A group of modules that differ only in their layer index, for summaries.
#[derive(Debug, Clone)]
pub struct ModuleGroup {
    /// The path with the layer index replaced by `*`.
    pub template: String,
    /// The layer indices, in order (empty for modules outside numbered layers).
    pub layers: Vec<u64>,
    /// Number of modules in the group.
    pub count: usize,
    /// A representative module (all members agree on everything but the path and keys).
    pub module: Module,
}

impl Scan {
    /// Modules grouped by their path with the layer index taken out, in order of first appearance.
    pub fn module_groups(&self) -> Vec<ModuleGroup> {
        let mut order: Vec<ModuleGroup> = Vec::new();
        let mut lookup: HashMap<GroupKey, usize> = HashMap::new();
        for m in &self.modules {
            let (template, layer) = template_of(&m.path);
            let key = GroupKey {
                template: template.clone(),
                kind: m.kind.name(),
                variant: m.variant.name(),
                layout: m.layout,
                rank: m.rank,
                in_dims: m.in_dims,
                out_dims: m.out_dims,
                num_experts: m.num_experts,
                dtype: m.dtype,
            };
            if let Some(&i) = lookup.get(&key) {
                let g = &mut order[i];
                g.count += 1;
                if let Some(l) = layer {
                    g.layers.push(l);
                }
            } else {
                lookup.insert(key, order.len());
                order.push(ModuleGroup {
                    template,
                    layers: layer.into_iter().collect(),
                    count: 1,
                    module: Module {
                        tensor_ids: smallvec::SmallVec::new(),
                        places: smallvec::SmallVec::new(),
                        shapes: smallvec::SmallVec::new(),
                        ..m.clone()
                    },
                });
            }
        }
        order
    }
}

#[derive(Hash, PartialEq, Eq)]
struct GroupKey {
    template: String,
    kind: &'static str,
    variant: &'static str,
    layout: Layout,
    rank: Option<u64>,
    in_dims: Option<u64>,
    out_dims: Option<u64>,
    num_experts: Option<u64>,
    dtype: &'static str,
}
