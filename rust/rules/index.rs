//! A shard index against the headers of its shards: every key listed in the shard that holds
//! it, no key in two shards, and the declared total size.
//!
//! May use: `error`, `par`, `naming`, `read`, `problem`.

use std::path::Path;

use crate::error::{Result, ScanError, ShardKeyIssue};
use crate::naming::natural::sort_natural;
use crate::problem::{Code, Problem, Severity};
use crate::read::header::{all_distinct, name_hash, Header};
use crate::read::index::ShardIndex;

pub(crate) fn check_index(
    index_path: &Path,
    index: &ShardIndex,
    headers: &[Header],
    problems: &mut Vec<Problem>,
) -> Result<()> {
    // headers[i] is the file of index.shards[i].
    // Fastest, for what writers produce: the index lists each shard's names in the file's order.
    if lists_in_file_order(index, headers) || lists_each_shard_exactly(index, headers) {
        return consistent_index(index_path, index, headers, problems);
    }
    index.check_unique(index_path)?;
    let stored = Stored::read(headers);
    let issues = stored.issues(index);
    if !issues.is_empty() {
        return Err(ScanError::ShardMismatch {
            path: index_path.to_path_buf(),
            issues,
        });
    }
    check_total_size(index, headers, problems);
    Ok(())
}

/// Fast path, in parallel per shard: the index lists for shard i exactly the names shard i holds
/// (names are unique within a file and within the index, so equal counts + inclusion suffice).
fn lists_each_shard_exactly(index: &ShardIndex, headers: &[Header]) -> bool {
    let mut listed_in: Vec<Vec<&str>> = vec![Vec::new(); headers.len()];
    for (key, shard) in index.entries() {
        if let Some(v) = listed_in.get_mut(shard as usize) {
            v.push(key);
        }
    }
    let pairs: Vec<(&Header, &Vec<&str>)> = headers.iter().zip(&listed_in).collect();
    let parallel = index.len() >= crate::par::MIN_PARALLEL;
    listed_in.len() == headers.len()
        && crate::par::map(&pairs, parallel, |&(h, keys)| {
            keys.len() == h.tensors.len()
                && (
                    // Writers usually list a shard's names in the index's order (both sorted,
                    // or both in insertion order): then no set is needed.
                    keys.iter().zip(h.iter()).all(|(k, t)| *k == t.name) || {
                        let mut names: foldhash::HashSet<&str> = h.iter().map(|t| t.name).collect();
                        keys.iter().all(|k| names.remove(k))
                    }
                )
        })
        .into_iter()
        .all(|ok| ok)
}

/// Where the shards store each name (the first shard that holds it), and the names stored again
/// in a later shard: (name, first shard, later shard).
struct Stored<'h> {
    at: foldhash::HashMap<&'h str, u32>,
    twice: Vec<(&'h str, u32, u32)>,
}

impl<'h> Stored<'h> {
    fn read(headers: &'h [Header]) -> Self {
        let total: usize = headers.iter().map(|h| h.tensors.len()).sum();
        let mut at: foldhash::HashMap<&str, u32> = foldhash::HashMap::default();
        at.reserve(total);
        let mut twice: Vec<(&str, u32, u32)> = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            for t in h.iter() {
                if let Some(&first) = at.get(t.name) {
                    twice.push((t.name, first, i as u32));
                } else {
                    at.insert(t.name, i as u32);
                }
            }
        }
        Self { at, twice }
    }

    /// Every disagreement between the index and the shards: keys listed but stored nowhere or
    /// elsewhere, keys stored in two shards, keys stored but not listed.
    fn issues(&self, index: &ShardIndex) -> Vec<ShardKeyIssue> {
        let name_of = |i: u32| index.shards[i as usize].clone();
        let mut issues = Vec::new();
        let mut found = 0usize;
        for (key, shard) in index.entries() {
            let shard = &shard;
            match self.at.get(key) {
                None => issues.push(ShardKeyIssue {
                    key: key.to_string(),
                    reason: format!(
                        "listed in the index under `{}`, but no shard holds it",
                        name_of(*shard)
                    ),
                }),
                Some(&loc) => {
                    found += 1;
                    let elsewhere = loc != *shard
                        && !self.twice.iter().any(|(k, _, at)| *k == key && at == shard);
                    if elsewhere {
                        issues.push(ShardKeyIssue {
                            key: key.to_string(),
                            reason: format!(
                                "listed in the index under `{}`, but stored in `{}`",
                                name_of(*shard),
                                name_of(loc)
                            ),
                        });
                    }
                }
            }
        }
        for (key, first, again) in &self.twice {
            issues.push(ShardKeyIssue {
                key: (*key).to_string(),
                reason: format!(
                    "stored in two shards: `{}` and `{}`",
                    name_of(*first),
                    name_of(*again)
                ),
            });
        }
        if found != self.at.len() {
            self.unlisted(index, &mut issues);
        }
        issues
    }

    /// The stored keys the index does not list (the slow path, only on error), in natural order.
    fn unlisted(&self, index: &ShardIndex, issues: &mut Vec<ShardKeyIssue>) {
        let listed: foldhash::HashSet<&str> = index.entries().map(|(k, _)| k).collect();
        let mut extra: Vec<(&str, u32)> = self
            .at
            .iter()
            .filter(|(k, _)| !listed.contains(*k))
            .map(|(k, v)| (*k, *v))
            .collect();
        sort_natural(&mut extra, |e| e.0);
        for (key, loc) in extra {
            issues.push(ShardKeyIssue {
                key: key.to_string(),
                reason: format!(
                    "stored in `{}` but not listed in the index",
                    index.shards[loc as usize]
                ),
            });
        }
    }
}

/// The rest of [`check_index`] once each shard's list in the index is its file's names (unique
/// within a file): the index repeats a name exactly when two shards hold it. Sorted indexes repeat
/// none; otherwise compare hashes of the shards' names, and settle a match (a repeat, or a
/// collision) exactly.
fn consistent_index(
    index_path: &Path,
    index: &ShardIndex,
    headers: &[Header],
    problems: &mut Vec<Problem>,
) -> Result<()> {
    if !index.known_unique() && !disjoint_by_hash(headers) {
        index.check_unique(index_path)?;
    }
    check_total_size(index, headers, problems);
    Ok(())
}

/// Whether the index lists, for every shard, exactly its file's names in the file's order (shards
/// interleaved in any way). In parallel over runs of entries: each run's count per shard gives
/// the next run's starting place in every file.
fn lists_in_file_order(index: &ShardIndex, headers: &[Header]) -> bool {
    const RUN: usize = 8192;
    let total: usize = headers.iter().map(|h| h.tensors.len()).sum();
    if index.len() != total {
        return false;
    }
    let runs: Vec<std::ops::Range<usize>> = (0..total)
        .step_by(RUN)
        .map(|start| start..(start + RUN).min(total))
        .collect();
    let parallel = total >= crate::par::MIN_PARALLEL;
    let counts: Vec<Option<Vec<usize>>> = crate::par::map(&runs, parallel, |run| {
        let mut count = vec![0usize; headers.len()];
        for shard in index.shards_in(run.clone()) {
            *count.get_mut(shard as usize)? += 1;
        }
        Some(count)
    });
    let mut starts: Vec<Vec<usize>> = Vec::with_capacity(runs.len());
    let mut next = vec![0usize; headers.len()];
    for count in counts {
        let Some(count) = count else { return false };
        starts.push(next.clone());
        next.iter_mut().zip(count).for_each(|(n, c)| *n += c);
    }
    if next.iter().zip(headers).any(|(&n, h)| n != h.tensors.len()) {
        return false;
    }
    let runs: Vec<(std::ops::Range<usize>, Vec<usize>)> = runs.into_iter().zip(starts).collect();
    crate::par::map(&runs, parallel, |(run, start)| {
        let mut at = start.clone();
        index.entries_in(run.clone()).all(|(key, shard)| {
            let s = shard as usize;
            let h = &headers[s];
            let same = h.tensors.get(at[s]).is_some_and(|t| h.name(t) == key);
            at[s] += 1;
            same
        })
    })
    .into_iter()
    .all(|ok| ok)
}

/// Whether no name is in two files, by 64-bit name hashes (those the duplicate check kept, or
/// computed per file in parallel). `false` is a repeat or, rarely, a collision.
fn disjoint_by_hash(headers: &[Header]) -> bool {
    if headers.len() < 2 {
        return true;
    }
    let tensors: usize = headers.iter().map(|h| h.tensors.len()).sum();
    let computed: Vec<Vec<u64>> =
        crate::par::map(headers, tensors >= crate::par::MIN_PARALLEL, |h| {
            if h.name_hashes.len() == h.tensors.len() {
                Vec::new()
            } else {
                h.iter().map(|t| name_hash(t.name)).collect()
            }
        });
    let lists: Vec<&[u64]> = headers
        .iter()
        .zip(&computed)
        .map(|(h, c)| {
            if c.is_empty() {
                &h.name_hashes[..]
            } else {
                &c[..]
            }
        })
        .collect();
    let total: usize = lists.iter().map(|l| l.len()).sum();
    all_distinct(lists.iter().flat_map(|l| l.iter().copied()), total)
}

fn check_total_size(index: &ShardIndex, headers: &[Header], problems: &mut Vec<Problem>) {
    if let Some(total) = index.total_size {
        let data: u64 = headers.iter().map(Header::data_bytes).sum();
        if total != data {
            problems.push(Problem::new(
                Code::IndexTotalSizeMismatch,
                Severity::Warning,
                None,
                format!(
                    "the index's metadata.total_size is {total}, the shards hold {data} bytes of tensor data"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::header::tests::tensors_file;
    use crate::read::open::Limits;

    fn header_of(names: &[String]) -> Header {
        let tensors: Vec<(&str, &str, &[u64])> = names
            .iter()
            .map(|n| (n.as_str(), "F32", &[1u64][..]))
            .collect();
        let bytes = tensors_file(&tensors);
        crate::read::header::parse_header(
            Path::new("x"),
            &bytes[8..bytes.len() - 4 * names.len()],
            bytes.len() as u64,
            &Limits::default(),
        )
        .unwrap()
    }

    proptest::proptest! {
        /// The in-order path answers exactly when each shard's entries follow its file's order,
        /// and the index is accepted either way (the sets of names are the same).
        #[test]
        fn index_in_file_order_whatever_the_interleaving(
            shard_of in proptest::collection::vec(0usize..4, 1..40),
            file_seed in proptest::prelude::any::<u64>(),
            pick in proptest::collection::vec(0usize..4, 0..200),
            swap in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<proptest::sample::Index>())),
        ) {
            let shards = shard_of.iter().max().unwrap() + 1;
            // Each file's names, in an order that depends on the seed.
            let mut files: Vec<Vec<String>> = vec![Vec::new(); shards];
            for (i, &s) in shard_of.iter().enumerate() {
                files[s].push(format!("t{i}"));
            }
            for (s, f) in files.iter_mut().enumerate() {
                f.sort_by_key(|n| name_hash(n) ^ file_seed ^ s as u64);
            }
            // The index: shards interleaved as `pick` says, each in its file's order.
            let mut next = vec![0usize; shards];
            let mut entries: Vec<(String, usize)> = Vec::new();
            let mut picks = pick.iter().copied().chain(0..shards).cycle();
            while entries.len() < shard_of.len() {
                let s = picks.next().unwrap() % shards;
                if next[s] < files[s].len() {
                    entries.push((files[s][next[s]].clone(), s));
                    next[s] += 1;
                } else if let Some(s) = (0..shards).find(|&s| next[s] < files[s].len()) {
                    entries.push((files[s][next[s]].clone(), s));
                    next[s] += 1;
                }
            }
            if let Some((a, b)) = swap {
                let (a, b) = (a.index(entries.len()), b.index(entries.len()));
                entries.swap(a, b);
            }
            let in_order = (0..shards).all(|s| {
                entries.iter().filter(|e| e.1 == s).map(|e| e.0.as_str()).eq(files[s].iter().map(String::as_str))
            });
            let map: Vec<String> = entries
                .iter()
                .map(|(n, s)| format!("\"{n}\":\"s{s}.safetensors\""))
                .collect();
            let text = format!("{{\"weight_map\":{{{}}}}}", map.join(","));
            let index = crate::read::index::parse_index(Path::new("i"), text.as_bytes()).unwrap();
            // headers[i] is the file of the index's i-th shard name (first appearance).
            let by_id: Vec<Header> = index
                .shard_names()
                .iter()
                .map(|n| {
                    let s: usize = n[1..n.len() - ".safetensors".len()].parse().unwrap();
                    header_of(&files[s])
                })
                .collect();
            proptest::prop_assert_eq!(lists_in_file_order(&index, &by_id), in_order);
            proptest::prop_assert!(check_index(Path::new("i"), &index, &by_id, &mut Vec::new()).is_ok());
        }
    }
}
