//! A fast path for safetensors headers as writers produce them (and the cursor that the shard
//! index's fast path shares).
//!
//! Headers are JSON objects of a fixed shape: tensor names mapped to `{"dtype": str,
//! "shape": [uint, ...], "data_offsets": [uint, uint]}`, plus an optional `__metadata__` object of
//! strings. This parser reads exactly that shape in one pass, with no intermediate values, and
//! gives up (`None`) on anything else: escapes or control characters in strings, other fields,
//! numbers that are not plain unsigned integers, duplicate fields or `__metadata__` keys, unknown
//! dtypes, more tensors than the limit, any syntax it does not expect. The caller then parses the
//! same bytes with the full `serde_json` visitor, which accepts the rest of JSON and reports every
//! error with its position. So the fast path decides nothing on its own: for every input it
//! accepts, the result is the one the full parser gives (a property test checks this).
//!
//! May use: `read::{dtype, table}`.

use std::collections::BTreeMap;

use crate::read::dtype::Dtype;
use crate::read::table::{Names, Shape, TensorInfo};

/// `(metadata, tensors)`, as the full parser returns them.
pub(crate) type Parsed = (Option<BTreeMap<String, String>>, Names, Vec<TensorInfo>);

/// A position in JSON text, for the one-pass readers of the usual shapes (headers, indexes).
pub(crate) struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pub(crate) pos: usize,
}

/// The length of a string's body (the bytes before its closing quote), or `None` at an escape, a
/// control character or the end of the text. Eight bytes at a time: names are tens of bytes, too
/// short for a vector search to pay for its setup.
#[inline]
fn string_len(body: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = body.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // High bit set in bytes that are zero (so a quote or backslash in `x`) or below 0x20. The
        // lowest flagged byte is always a true one: false flags only sit above a true one.
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if hits != 0 {
            let at = i + (hits.trailing_zeros() / 8) as usize;
            return (body[at] == b'"').then_some(at);
        }
        i += 8;
    }
    let tail = body.get(i..)?;
    let at = tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    (tail[at] == b'"').then_some(i + at)
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Cursor {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.pos == self.bytes.len()
    }

    /// Consume `null`.
    pub(crate) fn null(&mut self) -> bool {
        self.ws();
        let found = self.bytes[self.pos..].starts_with(b"null");
        if found {
            self.pos += 4;
        }
        found
    }

    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skip whitespace, then consume `b`.
    #[inline]
    pub(crate) fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// After a member: `,` (`Some(false)`, more follow) or `close` (`Some(true)`, the end).
    #[inline]
    pub(crate) fn comma_or(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let b = self.peek()?;
        self.pos += 1;
        match b {
            b',' => Some(false),
            _ if b == close => Some(true),
            _ => None,
        }
    }

    /// A string without escapes or control characters, borrowed from the text.
    #[inline]
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        self.string_like("")
    }

    /// Consume the string `"s"` when it comes next (after whitespace), for an `s` read before
    /// (so known to need no escape).
    #[inline]
    pub(crate) fn repeat_of(&mut self, s: Option<&str>) -> bool {
        let Some(s) = s else { return false };
        self.ws();
        let start = self.pos + 1;
        let end = start + s.len();
        let found = self.peek() == Some(b'"')
            && self.bytes.get(start..end) == Some(s.as_bytes())
            && self.bytes.get(end) == Some(&b'"');
        if found {
            self.pos = end + 1;
        }
        found
    }

    /// As [`Cursor::string`], for a string that likely starts like `prev` (a string read before,
    /// so known to need no escape): the bytes it shares with `prev` are compared eight at a time
    /// instead of being searched for a quote, a backslash or a control character.
    #[inline]
    pub(crate) fn string_like(&mut self, prev: &str) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let body = &self.bytes[start..];
        let prev = prev.as_bytes();
        let mut same = 0;
        while let (Some(a), Some(b)) = (body.get(same..same + 8), prev.get(same..same + 8)) {
            let x = u64::from_le_bytes(a.try_into().ok()?) ^ u64::from_le_bytes(b.try_into().ok()?);
            if x != 0 {
                same += (x.trailing_zeros() / 8) as usize;
                break;
            }
            same += 8;
        }
        let len = same + string_len(&body[same..])?;
        self.pos = start + len + 1;
        // Quotes are ASCII, so both ends are character boundaries of the (valid UTF-8) text.
        self.text.get(start..start + len)
    }

    /// Consume `"name"` when it comes next (after whitespace).
    #[inline]
    fn literal<const N: usize>(&mut self, quoted: &[u8; N]) -> bool {
        self.ws();
        self.exact(quoted).is_some()
    }

    /// A plain unsigned integer: `0` or `[1-9][0-9]*`, fitting in 64 bits.
    #[inline]
    pub(crate) fn uint(&mut self) -> Option<u64> {
        self.ws();
        self.digits()
    }

    /// As [`Cursor::uint`], with no whitespace before it.
    #[inline]
    fn digits(&mut self) -> Option<u64> {
        let bytes = self.bytes;
        let mut pos = self.pos;
        let digit = |pos: usize| {
            bytes
                .get(pos)
                .map(|b| b.wrapping_sub(b'0'))
                .filter(|&d| d <= 9)
        };
        let mut value = u64::from(digit(pos)?);
        pos += 1;
        if value == 0 {
            if digit(pos).is_some() {
                return None; // leading zero
            }
        } else {
            // Nineteen digits cannot overflow 64 bits: no checks until then.
            let end = pos + 18;
            while pos < end {
                let Some(d) = digit(pos) else { break };
                value = value * 10 + u64::from(d);
                pos += 1;
            }
            if let Some(d) = digit(pos) {
                value = value.checked_mul(10)?.checked_add(u64::from(d))?;
                pos += 1;
                if digit(pos).is_some() {
                    return None; // more than 20 digits
                }
            }
        }
        self.pos = pos;
        // A fraction or exponent makes it a float: the full parser reports it.
        (!matches!(self.peek(), Some(b'.' | b'e' | b'E'))).then_some(value)
    }

    fn shape(&mut self) -> Option<Shape> {
        self.eat(b'[')?;
        let mut shape = Shape::new();
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(shape);
        }
        loop {
            shape.push(self.uint()?);
            if self.comma_or(b']')? {
                return Some(shape);
            }
        }
    }

    fn offsets(&mut self) -> Option<(u64, u64)> {
        self.eat(b'[')?;
        let begin = self.uint()?;
        self.eat(b',')?;
        let end = self.uint()?;
        self.eat(b']')?;
        Some((begin, end))
    }

    /// Once `list` holds [`ESTIMATE_AFTER`] entries read from `start` to here, make room for all
    /// the entries the rest of the text would hold at that size (up to `max`): a list of millions
    /// is then not regrown and copied as it fills.
    #[inline]
    pub(crate) fn reserve_estimate<T>(&self, list: &mut Vec<T>, start: usize, max: usize) {
        if list.len() == ESTIMATE_AFTER {
            let per_entry = ((self.pos - start) / ESTIMATE_AFTER).max(1);
            let estimate = (self.bytes.len() - start) / per_entry;
            let want = (estimate + estimate / 32 + 8).min(max);
            list.reserve_exact(want.saturating_sub(list.len()));
        }
    }

    /// Consume `quoted` if the text continues with exactly it (no whitespace skipped). Of a
    /// known length, the comparison is a few word loads, not a call.
    #[inline]
    fn exact<const N: usize>(&mut self, quoted: &[u8; N]) -> Option<()> {
        let next: &[u8; N] = self.bytes.get(self.pos..self.pos + N)?.try_into().ok()?;
        (next == quoted).then(|| self.pos += N)
    }

    /// An entry as its writers print it, after the name's colon, with no whitespace: the
    /// `safetensors` package's `{"dtype":"X","shape":[..],"data_offsets":[b,e]}`, or MLX's
    /// `{"data_offsets":[b,e],"dtype":"X","shape":[..]}` (fields in sorted order). Each piece is
    /// matched as a whole (no per-byte whitespace or field-name steps); anything else gives `None`
    /// with the cursor where it was, and [`Cursor::entry_any`] reads it.
    #[inline]
    fn entry_compact(&mut self) -> Option<(Dtype, Shape, (u64, u64))> {
        let start = self.pos;
        let entry = (|| {
            let (dtype, shape, offsets) = if self.exact(b"{\"dtype\":\"").is_some() {
                let dtype = self.compact_dtype()?;
                self.exact(b",\"shape\":[")?;
                let shape = self.compact_shape()?;
                self.exact(b",\"data_offsets\":[")?;
                (dtype, shape, self.compact_offsets()?)
            } else {
                self.exact(b"{\"data_offsets\":[")?;
                let offsets = self.compact_offsets()?;
                self.exact(b",\"dtype\":\"")?;
                let dtype = self.compact_dtype()?;
                self.exact(b",\"shape\":[")?;
                (dtype, self.compact_shape()?, offsets)
            };
            self.exact(b"}")?;
            Some((dtype, shape, offsets))
        })();
        if entry.is_none() {
            self.pos = start;
        }
        entry
    }

    /// A dtype name and its closing quote, after the opening one.
    #[inline]
    fn compact_dtype(&mut self) -> Option<Dtype> {
        let len = string_len(&self.bytes[self.pos..])?;
        let dtype = Dtype::from_name(self.text.get(self.pos..self.pos + len)?)?;
        self.pos += len + 1;
        Some(dtype)
    }

    /// Dimensions and the closing bracket, after the opening one, with no whitespace.
    #[inline]
    fn compact_shape(&mut self) -> Option<Shape> {
        let mut shape = Shape::new();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(shape);
        }
        loop {
            shape.push(self.digits()?);
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b',' => {}
                b']' => return Some(shape),
                _ => return None,
            }
        }
    }

    /// `b,e]`, after the opening bracket, with no whitespace.
    #[inline]
    fn compact_offsets(&mut self) -> Option<(u64, u64)> {
        let begin = self.digits()?;
        self.exact(b",")?;
        let end = self.digits()?;
        self.exact(b"]")?;
        Some((begin, end))
    }

    fn entry(&mut self) -> Option<(Dtype, Shape, (u64, u64))> {
        self.entry_compact().or_else(|| self.entry_any())
    }

    /// An entry with any spacing and field order.
    fn entry_any(&mut self) -> Option<(Dtype, Shape, (u64, u64))> {
        self.eat(b'{')?;
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        loop {
            // Field names compared in place; any other (or escaped) name makes the full parser
            // decide.
            let duplicate = if self.literal(b"\"dtype\"") {
                self.eat(b':')?;
                dtype.replace(Dtype::from_name(self.string()?)?).is_some()
            } else if self.literal(b"\"shape\"") {
                self.eat(b':')?;
                shape.replace(self.shape()?).is_some()
            } else if self.literal(b"\"data_offsets\"") {
                self.eat(b':')?;
                offsets.replace(self.offsets()?).is_some()
            } else {
                return None;
            };
            if duplicate {
                return None;
            }
            if self.comma_or(b'}')? {
                return Some((dtype?, shape?, offsets?));
            }
        }
    }

    /// `null` (leaves `into` empty) or an object of strings.
    fn metadata(&mut self, into: &mut Option<BTreeMap<String, String>>) -> Option<()> {
        if self.null() {
            return Some(());
        }
        self.eat(b'{')?;
        let out = into.insert(BTreeMap::new());
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            let value = self.string()?;
            if out.insert(key.to_string(), value.to_string()).is_some() {
                return None;
            }
            if self.comma_or(b'}')? {
                return Some(());
            }
        }
    }
}

/// After this many entries, the rest are estimated from their size.
const ESTIMATE_AFTER: usize = 32;

/// Parse a header of the usual shape, or give up (`None`) so the full parser decides.
pub(crate) fn parse(text: &str, max_tensors: usize) -> Option<Parsed> {
    let mut c = Cursor::new(text);
    c.eat(b'{')?;
    let mut tensors = Vec::new();
    // Names take about half of a header's bytes.
    let mut names = Names::with_capacity(text.len() / 2);
    let mut metadata = None;
    let mut seen_metadata = false;
    c.ws();
    if c.peek()? == b'}' {
        c.pos += 1;
    } else {
        let mut prev = "";
        loop {
            let name = c.string_like(prev)?;
            prev = name;
            c.eat(b':')?;
            if name == "__metadata__" {
                if seen_metadata {
                    return None;
                }
                seen_metadata = true;
                c.metadata(&mut metadata)?;
            } else {
                if tensors.len() >= max_tensors {
                    return None;
                }
                c.reserve_estimate(&mut tensors, 0, max_tensors);
                let (dtype, shape, (begin, end)) = c.entry()?;
                tensors.push(TensorInfo {
                    name_span: names.push(name),
                    dtype,
                    shape,
                    begin,
                    end,
                });
            }
            if c.comma_or(b'}')? {
                break;
            }
        }
    }
    // All the headers of a folder are held at once: no spare capacity.
    tensors.shrink_to_fit();
    names.shrink_to_fit();
    c.at_end().then_some((metadata, names, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_shape() {
        let text = r#" { "__metadata__" : {"format":"pt","b":"x"},
            "a.lora_a":{"dtype":"F32","shape":[64,8],"data_offsets":[0,2048]},
            "s":{"shape":[],"data_offsets":[2048,2050],"dtype":"BF16"} } "#;
        let (meta, names, tensors) = parse(text, 10).unwrap();
        assert_eq!(meta.unwrap()["format"], "pt");
        assert_eq!(names.get(tensors[0].name_span), "a.lora_a");
        assert_eq!(names.get(tensors[1].name_span), "s");
        assert_eq!(tensors[0].shape.as_slice(), &[64, 8]);
        assert_eq!((tensors[1].begin, tensors[1].end), (2048, 2050));
        assert_eq!(parse(r#"{"__metadata__":null}"#, 1).unwrap().0, None);
        assert!(parse("{}", 0).unwrap().2.is_empty());
    }

    #[test]
    fn both_writers_compact_entries_take_the_template_path() {
        // The `safetensors` package's field order, and MLX's (sorted).
        for entry in [
            r#"{"dtype":"BF16","shape":[4096,8],"data_offsets":[16,65552]}"#,
            r#"{"data_offsets":[16,65552],"dtype":"BF16","shape":[4096,8]}"#,
        ] {
            let mut c = Cursor::new(entry);
            let (dtype, shape, offsets) = c.entry_compact().expect(entry);
            assert_eq!(
                (dtype.name(), shape.as_slice(), offsets),
                ("BF16", &[4096, 8][..], (16, 65552))
            );
            assert!(c.at_end());
        }
        // Scalars, and what the template leaves to the general reader (with the cursor unmoved).
        let mut c = Cursor::new(r#"{"data_offsets":[0,4],"dtype":"F32","shape":[]}"#);
        assert_eq!(c.entry_compact().map(|e| e.1.len()), Some(0));
        for entry in [
            r#"{"data_offsets":[0,4],"shape":[1],"dtype":"F32"}"#,
            r#"{"data_offsets":[0,4], "dtype":"F32","shape":[1]}"#,
            r#"{"data_offsets":[0,4],"dtype":"F32","shape":[1],"x":1}"#,
            r#"{"data_offsets":[0,4],"dtype":"F32"}"#,
        ] {
            let mut c = Cursor::new(entry);
            assert!(c.entry_compact().is_none(), "{entry}");
            assert_eq!(c.pos, 0);
        }
    }

    proptest::proptest! {
        /// Eight bytes at a time finds what a byte at a time finds.
        #[test]
        fn string_len_matches_a_byte_loop(body in proptest::collection::vec(
            proptest::sample::select(vec![b'a', b'"', b'\\', 0x1f, 0x20, 0x7f, 0x80, 0xc3, 0xff, b'.']), 0..40)) {
            let naive = body.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .filter(|&i| body[i] == b'"');
            proptest::prop_assert_eq!(string_len(&body), naive);
        }
    }

    #[test]
    fn gives_up_on_everything_else() {
        let e = r#""dtype":"F32","shape":[1],"data_offsets":[0,4]"#;
        for text in [
            format!(r#"{{"a\u0062":{{{e}}}}}"#),         // escape
            format!(r#"{{"a":{{{e},"x":1}}}}"#),         // other field
            format!(r#"{{"a":{{{e},"dtype":"F32"}}}}"#), // duplicate field
            r#"{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#.into(),
            r#"{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#.into(),
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.into(),
            r#"{"a":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}"#.into(),
            r#"{"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}}"#.into(),
            r#"{"a":{"dtype":"X","shape":[1],"data_offsets":[0,4]}}"#.into(),
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#.into(),
            r#"{"__metadata__":{"a":"1","a":"2"}}"#.into(),
            r#"{"__metadata__":null,"__metadata__":null}"#.into(),
            r#"{"__metadata__":{"a":1}}"#.into(),
            format!(r#"{{"a":{{{e}}}}} x"#),   // trailing bytes
            format!(r#"{{"a":{{{e}}},}}"#),    // trailing comma
            format!("{{\"a\u{1}\":{{{e}}}}}"), // control character
        ] {
            assert!(parse(&text, 10).is_none(), "{text}");
        }
        assert!(parse(&format!(r#"{{"a":{{{e}}},"b":{{{e}}}}}"#), 1).is_none());
    }
}
