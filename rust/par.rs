//! Parallel where it pays, with the calling thread working too.
//!
//! Handing work to the thread pool costs a few tens of microseconds (a thread switch from the
//! caller's thread), more than a small adapter takes in all: below [`MIN_PARALLEL`] work stays on
//! the calling thread. Above it, the calling thread (Python's, or a loader's) is not parked while
//! the pool does the work: it takes items in turn with the pool's threads, which join as they
//! wake. A pool thread that has slept for a while can take milliseconds to wake (on a busy or
//! virtual machine more than a scan of a large adapter takes); the work then does not wait for
//! it. Called from a pool thread, the pool's own work stealing is used.
//!
//! May use: nothing else of the crate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

/// Below this many tensors (or modules' tensors), work stays on the calling thread.
pub const MIN_PARALLEL: usize = 4096;

/// How many pool threads help a caller that is not one of them: as many as leave one core for the
/// caller (none when the pool has a single thread).
fn helpers() -> usize {
    rayon::current_num_threads().saturating_sub(1)
}

fn on_pool() -> bool {
    rayon::current_thread_index().is_some()
}

/// `items.map(f).collect()`, in parallel when `parallel` (and there are two items or more).
pub fn map<'a, T: Sync, R: Send>(
    items: &'a [T],
    parallel: bool,
    f: impl Fn(&'a T) -> R + Sync + Send,
) -> Vec<R> {
    if !parallel || items.len() < 2 || helpers() == 0 {
        return items.iter().map(f).collect();
    }
    if on_pool() {
        return items.par_iter().map(f).collect();
    }
    // Each participant takes the next item until none is left, and keeps its results (with their
    // positions) to itself until done.
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    let take = || {
        let mut mine = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            mine.push((i, f(item)));
        }
        if !mine.is_empty() {
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&mut mine);
        }
    };
    rayon::in_place_scope(|s| {
        for _ in 0..helpers().min(items.len() - 1) {
            s.spawn(|_| take());
        }
        take();
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_unstable_by_key(|d| d.0);
    done.into_iter().map(|d| d.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_result_either_way() {
        let items: Vec<u32> = (0..100).collect();
        let serial = map(&items, false, |x| x * 2);
        assert_eq!(map(&items, true, |x| x * 2), serial);
        // From a pool thread too, and in a pool of one thread.
        assert_eq!(rayon::scope(|_| map(&items, true, |x| x * 2)), serial);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build();
        let one = one.expect("a pool of one thread");
        assert_eq!(one.install(|| map(&items, true, |x| x * 2)), serial);
    }

    #[test]
    fn every_item_once_whoever_takes_it() {
        let items: Vec<usize> = (0..10_000).collect();
        let calls = AtomicUsize::new(0);
        let out = map(&items, true, |&x| {
            calls.fetch_add(1, Ordering::Relaxed);
            x
        });
        assert_eq!(out, items);
        assert_eq!(calls.load(Ordering::Relaxed), items.len());
    }
}
