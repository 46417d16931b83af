//! Per-expert paths: `prefix.experts.<e>.rest`, grouped as `prefix.experts.rest`, and the stacked
//! mlx-lm form `prefix.switch_mlp.rest` (Mixtral's `w1`/`w3`/`w2` named `gate_proj`/`up_proj`/
//! `down_proj`).
//!
//! May use: nothing else of the crate.

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

/// A per-expert target name in the grouped form modules use (`x.experts.3.w1` -> `x.experts.w1`).
pub(crate) fn grouped(target: &str) -> String {
    let mut out = String::new();
    if expert_split_into(target, &mut out).is_some() {
        out
    } else {
        target.to_string()
    }
}

/// The Hugging Face name of an mlx-lm MoE block, as transformers 5 writes fused experts: every
/// block is `mlp` there, Mixtral's included, where mlx-lm keeps Mixtral's `block_sparse_moe`
/// (`X.block_sparse_moe` -> `X.mlp`; other paths unchanged).
pub fn hf_moe_block(block: &str) -> String {
    match block.strip_suffix(".block_sparse_moe") {
        Some(head) => format!("{head}.mlp"),
        None if block == "block_sparse_moe" => "mlp".to_string(),
        None => block.to_string(),
    }
}

/// The mlx-lm blocks a Hugging Face MoE block may be, most likely first: `X.mlp` is `X.mlp`, or
/// Mixtral's `X.block_sparse_moe`; any other path is itself.
pub fn mlx_moe_blocks(block: &str) -> Vec<String> {
    let mut out = vec![block.to_string()];
    if let Some(head) = block.strip_suffix(".mlp") {
        out.push(format!("{head}.block_sparse_moe"));
    } else if block == "mlp" {
        out.push("block_sparse_moe".to_string());
    }
    out
}

/// Mixtral's expert names in the Hugging Face layout and their mlx-lm names.
const MIXTRAL_EXPERTS: &[(&str, &str)] =
    &[("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")];

/// The mlx-lm path of a stacked expert module: `X.experts.P` -> `X.switch_mlp.P`, with Mixtral's
/// `w1`/`w3`/`w2` renamed to `gate_proj`/`up_proj`/`down_proj`. Other paths are returned as is.
pub fn stacked_path(path: &str) -> String {
    let Some((head, last)) = path.rsplit_once('.') else {
        return path.to_string();
    };
    let Some(prefix) = head.strip_suffix("experts") else {
        return path.to_string();
    };
    if !(prefix.is_empty() || prefix.ends_with('.')) {
        return path.to_string();
    }
    let name = MIXTRAL_EXPERTS
        .iter()
        .find(|(hf, _)| *hf == last)
        .map_or(last, |(_, mlx)| mlx);
    format!("{prefix}switch_mlp.{name}")
}

/// The Hugging Face per-expert name of expert `e` of a stacked mlx module (inverse of
/// [`stacked_path`]): `X.switch_mlp.P` -> `X.experts.{e}.P` (Mixtral: `w1`/`w3`/`w2`).
pub fn per_expert_path(path: &str, e: u64) -> String {
    let Some((head, last)) = path.rsplit_once('.') else {
        return path.to_string();
    };
    let Some(prefix) = head.strip_suffix("switch_mlp") else {
        return format!("{head}.{e}.{last}");
    };
    let name = if prefix.ends_with("block_sparse_moe.") {
        MIXTRAL_EXPERTS
            .iter()
            .find(|(_, mlx)| *mlx == last)
            .map_or(last, |(hf, _)| hf)
    } else {
        last
    };
    format!("{prefix}experts.{e}.{name}")
}

#[cfg(test)]
mod moe_block_tests {
    use super::*;

    #[test]
    fn mixtral_blocks_are_mlp_in_transformers_5() {
        assert_eq!(
            hf_moe_block("model.layers.0.block_sparse_moe"),
            "model.layers.0.mlp"
        );
        assert_eq!(hf_moe_block("model.layers.0.mlp"), "model.layers.0.mlp");
        assert_eq!(
            hf_moe_block("x.my_block_sparse_moe"),
            "x.my_block_sparse_moe"
        );
        assert_eq!(
            mlx_moe_blocks("model.layers.3.mlp"),
            vec!["model.layers.3.mlp", "model.layers.3.block_sparse_moe"]
        );
        assert_eq!(
            mlx_moe_blocks("model.layers.3.moe"),
            vec!["model.layers.3.moe"]
        );
    }
}
