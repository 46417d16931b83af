//! The natural order of dotted paths: components compared as numbers when both are numbers
//! (`layers.2` < `layers.10`), numbers before names, and `01` kept apart from `1` (`01` < `1`,
//! `0` < `00`): equal values tie-break on their text, so the order is total.
//!
//! May use: nothing else of the crate.

use std::cmp::Ordering;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

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
}
