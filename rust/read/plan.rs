//! The first reads of one or more sides (an adapter, a base): indexes and headers in one parallel
//! step, then each side's shard index decides which headers count.
//!
//! May use: `error`, `par`, `read::{header, index, open}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::read::header::{read_header, Header};
use crate::read::index::{confine, read_index, ShardIndex};
use crate::read::open::{check_inside, Limits};

/// What one side of a scan or a check reads first: a shard index (with the folder's
/// `.safetensors` files, read while the index is parsed, since they are almost always the shards
/// it names), or just files.
pub(crate) struct ReadPlan<'p> {
    /// The shard index, if any.
    pub index: Option<&'p Path>,
    /// The index's likely shards, or the files to read.
    pub files: &'p [PathBuf],
    /// The folder that the index's shard names are in.
    pub folder: &'p Path,
    pub limits: &'p Limits,
    /// Refuse a file whose real location is outside `folder`.
    pub confine: bool,
}

/// One first read, and what it gave.
pub(crate) enum Read {
    Index(Result<ShardIndex>),
    /// The header of `files[i]`.
    Header(usize, Result<Header>),
}

/// What a plan's reads gave.
pub(crate) struct Reads {
    /// The files read: the shards the index names, or the plan's files.
    pub files: Vec<PathBuf>,
    pub index: Option<ShardIndex>,
    /// Their headers, in the order of `files`.
    pub headers: Vec<Header>,
    /// Likely shards the index does not name.
    pub unreferenced: Vec<PathBuf>,
}

/// The first reads of every plan in one parallel step (indexes first: they are the largest
/// pieces), so that two sides read together keep every core busy; each plan gets its own back,
/// in order.
pub(crate) fn read_plans(plans: &[ReadPlan<'_>]) -> Vec<Vec<Read>> {
    /// One read of a plan: its index, or its file at a position.
    #[derive(Clone, Copy)]
    enum Task<'p> {
        Index(&'p Path),
        File(usize),
    }
    let mut tasks: Vec<(usize, Task<'_>)> = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        tasks.extend(plan.index.map(|index| (p, Task::Index(index))));
    }
    for (p, plan) in plans.iter().enumerate() {
        tasks.extend((0..plan.files.len()).map(|i| (p, Task::File(i))));
    }
    let done = crate::par::map(&tasks, tasks.len() > 1, |&(p, task)| {
        let plan = &plans[p];
        match task {
            Task::File(i) => Read::Header(i, plan.read(&plan.files[i])),
            Task::Index(index) => Read::Index(plan.read_index(index)),
        }
    });
    let mut out: Vec<Vec<Read>> = plans.iter().map(|_| Vec::new()).collect();
    for ((p, _), read) in tasks.iter().zip(done) {
        out[*p].push(read);
    }
    out
}

impl ReadPlan<'_> {
    /// The shard index, refused (with `SymlinkPolicy::Inside`) when it is really outside the
    /// folder, as any shard would be.
    fn read_index(&self, index: &Path) -> Result<ShardIndex> {
        if self.confine {
            check_inside(self.folder, index)?;
        }
        read_index(index, self.limits)
    }

    fn read(&self, file: &Path) -> Result<Header> {
        if self.confine {
            check_inside(self.folder, file)?;
        }
        read_header(file, self.limits)
    }

    /// Put this plan's first reads together. With an index, the index decides which headers
    /// count (a header that failed only for a file the index does not name is no error), and the
    /// shards it names that were not read yet are read now.
    pub(crate) fn finish(&self, done: Vec<Read>) -> Result<Reads> {
        let Some(index_path) = self.index else {
            let headers = done
                .into_iter()
                .filter_map(|d| match d {
                    Read::Header(_, h) => Some(h),
                    Read::Index(_) => None,
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Reads {
                files: self.files.to_vec(),
                index: None,
                headers,
                unreferenced: Vec::new(),
            });
        };
        let mut index = None;
        let mut early: HashMap<&PathBuf, Result<Header>> = HashMap::new();
        for d in done {
            match d {
                Read::Index(i) => index = Some(i),
                Read::Header(i, header) => {
                    early.insert(&self.files[i], header);
                }
            }
        }
        // The index was read with the rest; the fallback only spares an unwrap.
        let index = index.unwrap_or_else(|| self.read_index(index_path))?;
        let files = index
            .shard_names()
            .iter()
            .map(|s| confine(index_path, self.folder, s, Some(".safetensors")))
            .collect::<Result<Vec<_>>>()?;
        let missing: Vec<&PathBuf> = files.iter().filter(|f| !early.contains_key(f)).collect();
        let late = crate::par::map(&missing, missing.len() > 1, |f| (*f, self.read(f)));
        early.extend(late);
        let headers = files
            .iter()
            .map(|f| early.remove(f).unwrap_or_else(|| self.read(f)))
            .collect::<Result<Vec<_>>>()?;
        let mut unreferenced: Vec<PathBuf> = early.into_keys().cloned().collect();
        unreferenced.sort();
        Ok(Reads {
            files,
            index: Some(index),
            headers,
            unreferenced,
        })
    }
}
