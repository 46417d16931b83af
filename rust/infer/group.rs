//! Tensors grouped by module path: one pass per run of tensors (runs in parallel), PEFT
//! per-expert paths grouped with their expert index taken out.
//!
//! May use: `naming`, `infer` (the tensor view).

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::infer::TensorView;
use crate::naming::experts::RecentExperts;
use crate::naming::leaves::{classify, Family, Leaf, Slot, PEFT_PREFIX};

/// A factor as grouping read it: its family, leaf, slot and index in the scan's tensor list.
pub(crate) type Member = (Family, Leaf, Slot, usize);

/// Module paths, in order of first appearance (files usually list modules in natural order,
/// which then needs no sort). A path is borrowed from the tensor names, or (per-expert paths with
/// the expert index taken out) owned.
pub(crate) type Paths<'a> = indexmap::IndexSet<Cow<'a, str>, foldhash::fast::RandomState>;

/// A run of tensors grouped by module path: every factor with its path's position, in tensor
/// order (one list for all: a list per module would be an allocation per module).
#[derive(Default)]
pub(crate) struct Grouping<'a> {
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
    pub(crate) fn finish(self) -> Grouped<'a> {
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
pub(crate) struct Grouped<'a> {
    paths: Paths<'a>,
    factors: Vec<Member>,
    start: Vec<usize>,
    pub(crate) non_adapter: Vec<usize>,
}

impl Grouped<'_> {
    fn factors(&self, g: usize) -> &[Member] {
        &self.factors[self.start[g]..self.start[g + 1]]
    }
}

/// Where a path's factors are: (run, the path's position in that run) for each run that has some.
pub(crate) type Located = SmallVec<[(u32, u32); 1]>;

/// The paths of all runs, in order of first appearance, each with where its factors are.
pub(crate) fn locate<'r>(runs: &'r [Grouped<'_>]) -> Vec<(&'r str, Located)> {
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
pub(crate) fn gather<'r>(runs: &'r [Grouped<'_>], located: &Located) -> Cow<'r, [Member]> {
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
pub(crate) fn group<'a>(tensors: &[TensorView<'a>], offset: usize) -> Grouping<'a> {
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
