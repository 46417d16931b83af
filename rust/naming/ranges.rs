//! Compact text for sorted index lists (layers, experts): `0-2, 5, 7-8`, cut after
//! [`MAX_LISTED_RANGES`] ranges.
//!
//! May use: nothing else of the crate.

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
