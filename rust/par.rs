//! Parallel where it pays: handing work to the thread pool costs a few tens of microseconds (a
//! thread switch from the caller's thread), more than a small adapter takes in all.

use rayon::prelude::*;

/// Below this many tensors (or modules' tensors), work stays on the calling thread.
pub const MIN_PARALLEL: usize = 4096;

/// `items.map(f).collect()`, on the pool when `parallel`.
pub fn map<'a, T: Sync, R: Send>(
    items: &'a [T],
    parallel: bool,
    f: impl Fn(&'a T) -> R + Sync + Send,
) -> Vec<R> {
    if parallel {
        items.par_iter().map(f).collect()
    } else {
        items.iter().map(f).collect()
    }
}

/// `items.map(f)` collected into a `Result`, on the pool when `parallel`.
pub fn try_map<'a, T: Sync, R: Send, E: Send>(
    items: &'a [T],
    parallel: bool,
    f: impl Fn(&'a T) -> Result<R, E> + Sync + Send,
) -> Result<Vec<R>, E> {
    if parallel {
        items.par_iter().map(f).collect()
    } else {
        items.iter().map(f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_result_either_way() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(map(&items, true, |x| x * 2), map(&items, false, |x| x * 2));
        let f = |x: &u32| if *x == 50 { Err(*x) } else { Ok(*x) };
        assert_eq!(try_map(&items, true, f), Err(50));
        assert_eq!(try_map(&items, false, f), Err(50));
    }
}
