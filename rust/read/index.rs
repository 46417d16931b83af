//! Sharded checkpoints: `*.safetensors.index.json` and confinement of the files it names.
//!
//! May use: `error`, `read::{open, fast}`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;

use crate::error::{Result, ScanError};
use crate::read::fast::Cursor;
use crate::read::open::{read_small_file_into, Limits, SmallFile};

/// A parsed shard index. Tensor names stay in the index text (no string per tensor).
#[derive(Debug, Clone, Default)]
pub struct ShardIndex {
    text: String,
    entries: Vec<(KeySpan, u32)>,
    escaped: Vec<String>,
    /// The distinct shard file names, in order of first appearance.
    pub shards: Vec<String>,
    /// `metadata.total_size`, when present and an integer.
    pub total_size: Option<u64>,
    /// The names are in strictly increasing byte order, so none repeats.
    sorted: bool,
}

/// Where a tensor name of the index is: a span of the text (start, length), or, when it has
/// escapes or lies beyond 4 GiB, a string of `escaped` (`(i, ESCAPED)`). Twelve bytes an entry
/// with the shard: indexes of a million tensors are common.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeySpan(u32, u32);

const ESCAPED: u32 = u32::MAX;

impl KeySpan {
    /// The span of `key`, a slice of the text that starts at address `base`; `None` when it lies
    /// beyond 4 GiB (or is as long as `ESCAPED`).
    fn in_text(key: &str, base: usize) -> Option<Self> {
        let start = u32::try_from(key.as_ptr() as usize - base).ok()?;
        let len = u32::try_from(key.len()).ok().filter(|&n| n != ESCAPED)?;
        Some(KeySpan(start, len))
    }
}

/// Shard names, interned: they repeat for every tensor, and consecutive entries usually name
/// the same one.
#[derive(Default)]
struct ShardIds {
    shards: Vec<String>,
    ids: foldhash::HashMap<String, u32>,
    last: u32,
}

impl ShardIds {
    /// The shard named last.
    fn last_name(&self) -> Option<&str> {
        self.shards.get(self.last as usize).map(String::as_str)
    }

    /// The id of `shard` (`None`: more than 2^32 shards).
    fn id(&mut self, shard: &str) -> Option<u32> {
        if self
            .shards
            .get(self.last as usize)
            .is_none_or(|s| s != shard)
        {
            self.last = if let Some(&i) = self.ids.get(shard) {
                i
            } else {
                let i = u32::try_from(self.shards.len()).ok()?;
                self.shards.push(shard.to_string());
                self.ids.insert(shard.to_string(), i);
                i
            };
        }
        Some(self.last)
    }
}

impl ShardIndex {
    /// The distinct shard names, in order of first appearance.
    pub fn shard_names(&self) -> &[String] {
        &self.shards
    }

    /// Number of tensors listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tensor is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(tensor name, index into shards)`, in the order of the index.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.entries_in(0..self.len())
    }

    /// The raw entries at positions `range`, clamped to the list.
    fn entries_at(&self, range: std::ops::Range<usize>) -> &[(KeySpan, u32)] {
        let end = range.end.min(self.entries.len());
        &self.entries[range.start.min(end)..end]
    }

    /// The shards of the entries at positions `range` (clamped to the list).
    pub(crate) fn shards_in(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = u32> + '_ {
        self.entries_at(range).iter().map(|e| e.1)
    }

    /// The entries at positions `range` (clamped to the list), as [`Self::entries`] gives them.
    pub(crate) fn entries_in(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.entries_at(range).iter().map(|(k, s)| {
            let name = match *k {
                KeySpan(i, ESCAPED) => self.escaped[i as usize].as_str(),
                KeySpan(a, n) => &self.text[a as usize..a as usize + n as usize],
            };
            (name, *s)
        })
    }

    /// Refuse a name listed twice. Parsing leaves this out: the shards' own names are compared
    /// with the index anyway ([`crate::rules::index::check_index`]), which proves most indexes unique
    /// without a set of every name.
    pub fn check_unique(&self, path: &Path) -> Result<()> {
        if self.sorted {
            return Ok(());
        }
        let mut seen: foldhash::HashSet<&str> = foldhash::HashSet::default();
        seen.reserve(self.len());
        for (name, _) in self.entries() {
            if !seen.insert(name) {
                return Err(ScanError::DuplicateKey {
                    path: path.to_path_buf(),
                    key: format!("weight_map.{name}"),
                });
            }
        }
        Ok(())
    }

    /// Whether the names are known to be unique without [`Self::check_unique`]'s set.
    pub(crate) fn known_unique(&self) -> bool {
        self.sorted
    }
}

/// Read and parse the index at `path`. Names listed twice are found by
/// [`ShardIndex::check_unique`], not here.
pub fn read_index(path: &Path, limits: &Limits) -> Result<ShardIndex> {
    let spare = std::mem::take(&mut *SPARE_TEXT.lock().unwrap_or_else(PoisonError::into_inner));
    let bytes = read_small_file_into(path, limits, SmallFile::Index, spare)?;
    parse_index_owned(path, bytes)
}

/// The text buffer of the last index dropped, for the next one to read into: an index is megabytes,
/// and fresh pages for it (faulted in and zeroed by the kernel) cost as much as parsing it.
static SPARE_TEXT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The largest index text kept for reuse.
const MAX_SPARE_TEXT: usize = 16 << 20;

impl Drop for ShardIndex {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.text);
        if text.capacity() <= MAX_SPARE_TEXT {
            let mut spare = SPARE_TEXT.lock().unwrap_or_else(PoisonError::into_inner);
            if spare.capacity() < text.capacity() {
                *spare = text.into_bytes();
            }
        }
    }
}

fn schema_error(path: &Path, message: impl Into<String>) -> ScanError {
    ScanError::ShardIndex {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parse index bytes (names listed twice: see [`ShardIndex::check_unique`]).
pub fn parse_index(path: &Path, bytes: &[u8]) -> Result<ShardIndex> {
    parse_index_owned(path, bytes.to_vec())
}

fn parse_index_owned(path: &Path, bytes: Vec<u8>) -> Result<ShardIndex> {
    let text = String::from_utf8(bytes).map_err(|e| {
        schema_error(
            path,
            format!(
                "invalid UTF-8 at byte offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let parsed = match parse_fast(&text) {
        Some(parsed) => parsed,
        None => parse_full(path, &text)?,
    };
    let (shards, entries, escaped, total_size) = parsed;
    let mut index = ShardIndex {
        text,
        entries,
        escaped,
        shards,
        total_size,
        sorted: false,
    };
    let sorted = index
        .entries()
        .zip(index.entries().skip(1))
        .all(|((a, _), (b, _))| a < b);
    index.sorted = sorted;
    Ok(index)
}

/// The full parser: any JSON, errors with their position.
pub(crate) fn parse_full(path: &Path, text: &str) -> Result<Parsed> {
    let base = text.as_ptr() as usize;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = (&mut de)
        .deserialize_map(IndexVisitor { base })
        .and_then(|v| de.end().map(|()| v));
    let index = parsed.map_err(|e| {
        let full = e.to_string();
        let message = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(m, _)| m);
        schema_error(
            path,
            format!("{message} (line {}, column {})", e.line(), e.column()),
        )
    })?;
    index.ok_or_else(|| schema_error(path, "no `weight_map` object"))
}

/// The usual shape in one pass: `{"metadata": null | {name: string | uint, ...}, "weight_map":
/// {tensor: shard, ...}}` in either order, no escapes, nothing else. Gives up (`None`) on
/// anything other, and the full parser decides; for what it accepts, it gives the full parser's
/// result (a property test checks this).
pub(crate) fn parse_fast(text: &str) -> Option<Parsed> {
    if u32::try_from(text.len()).is_err() {
        return None;
    }
    let base = text.as_ptr() as usize;
    let mut c = Cursor::new(text);
    let (mut weight_map, mut metadata) = (None, None);
    c.eat(b'{')?;
    loop {
        let key = c.string()?;
        c.eat(b':')?;
        let duplicate = match key {
            "weight_map" => weight_map.replace(weight_map_fast(&mut c, base)?).is_some(),
            "metadata" => metadata.replace(metadata_fast(&mut c)?).is_some(),
            _ => return None,
        };
        if duplicate {
            return None;
        }
        if c.comma_or(b'}')? {
            break;
        }
    }
    if !c.at_end() {
        return None;
    }
    let (shards, entries) = weight_map?;
    Some((
        shards,
        entries,
        Vec::new(),
        metadata.and_then(|m| m.total_size),
    ))
}

/// What the index's `metadata` tells.
struct Metadata {
    total_size: Option<u64>,
}

/// `null` or an object of strings and unsigned integers: `total_size` when it is an integer.
fn metadata_fast(c: &mut Cursor<'_>) -> Option<Metadata> {
    if c.null() {
        return Some(Metadata { total_size: None });
    }
    c.eat(b'{')?;
    let mut total_size = None;
    let mut seen_total = false;
    c.ws();
    if c.peek()? == b'}' {
        c.pos += 1;
        return Some(Metadata { total_size: None });
    }
    loop {
        let key = c.string()?;
        c.eat(b':')?;
        c.ws();
        let value = if c.peek()? == b'"' {
            c.string()?;
            None
        } else {
            Some(c.uint()?)
        };
        if key == "total_size" {
            if seen_total {
                return None;
            }
            seen_total = true;
            total_size = value;
        }
        if c.comma_or(b'}')? {
            return Some(Metadata { total_size });
        }
    }
}

/// Shard names, and `(tensor, shard id)` pairs.
type WeightMap = (Vec<String>, Vec<(KeySpan, u32)>);

/// The weight map: names as spans of the text, shard names interned.
fn weight_map_fast(c: &mut Cursor<'_>, base: usize) -> Option<WeightMap> {
    c.eat(b'{')?;
    let mut shards = ShardIds::default();
    let mut entries = Vec::new();
    c.ws();
    if c.peek()? == b'}' {
        c.pos += 1;
        return Some((shards.shards, entries));
    }
    let start = c.pos;
    let mut prev = "";
    loop {
        c.reserve_estimate(&mut entries, start, usize::MAX);
        let key = c.string_like(prev)?;
        prev = key;
        c.eat(b':')?;
        // Consecutive entries usually name the same shard: compared whole, it needs no scan.
        let id = if c.repeat_of(shards.last_name()) {
            shards.last
        } else {
            shards.id(c.string()?)?
        };
        // The text is shorter than 4 GiB, so every span fits.
        entries.push((KeySpan::in_text(key, base)?, id));
        if c.comma_or(b'}')? {
            return Some((shards.shards, entries));
        }
    }
}

struct IndexVisitor {
    base: usize,
}

/// Shard names, `(tensor, shard id)` pairs, escaped names, and `total_size`.
pub(crate) type Parsed = (Vec<String>, Vec<(KeySpan, u32)>, Vec<String>, Option<u64>);

impl<'de> Visitor<'de> for IndexVisitor {
    type Value = Option<Parsed>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with a `weight_map`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut weight_map: Option<Interned> = None;
        let mut total_size = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "weight_map" => {
                    if weight_map.is_some() {
                        return Err(de::Error::custom("duplicate key `weight_map`"));
                    }
                    weight_map = Some(map.next_value_seed(WeightMapSeed { base: self.base })?);
                }
                "metadata" => {
                    let v: serde_json::Value = map.next_value()?;
                    match v {
                        serde_json::Value::Null => {}
                        serde_json::Value::Object(m) => {
                            total_size = m.get("total_size").and_then(serde_json::Value::as_u64);
                        }
                        _ => return Err(de::Error::custom("`metadata` is not an object")),
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(weight_map.map(|(shards, entries, escaped)| (shards, entries, escaped, total_size)))
    }
}

struct WeightMapSeed {
    base: usize,
}

/// Shard names, `(tensor, shard id)` pairs, and the names that had escapes.
type Interned = (Vec<String>, Vec<(KeySpan, u32)>, Vec<String>);

impl<'de> DeserializeSeed<'de> for WeightMapSeed {
    type Value = Interned;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WeightMapSeed {
    type Value = Interned;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`weight_map`: an object mapping tensor names to shard file names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut shards = ShardIds::default();
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        let mut escaped = Vec::new();
        while let Some(CowStr(k)) = map.next_key::<CowStr<'de>>()? {
            let text_span = match &k {
                std::borrow::Cow::Borrowed(s) => KeySpan::in_text(s, self.base),
                std::borrow::Cow::Owned(_) => None,
            };
            let span = if let Some(span) = text_span {
                span
            } else {
                let i = u32::try_from(escaped.len())
                    .ok()
                    .filter(|&i| i != ESCAPED)
                    .ok_or_else(|| de::Error::custom("more than 2^32 escaped tensor names"))?;
                escaped.push(k.into_owned());
                KeySpan(i, ESCAPED)
            };
            let v = map.next_value::<CowStr<'de>>()?.0;
            let id = shards
                .id(&v)
                .ok_or_else(|| de::Error::custom("too many shards"))?;
            out.push((span, id));
        }
        Ok((shards.shards, out, escaped))
    }
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Check a file name taken from an index or a config and resolve it inside `folder`.
///
/// The check is lexical, as in the Hugging Face loaders: no absolute path, no drive or root, no
/// `..` component, separators of either kind. Symbolic links are then followed (or refused) when
/// the file is opened, so the Hugging Face cache layout of links into `blobs/` keeps working.
pub fn confine(
    referrer: &Path,
    folder: &Path,
    name: &str,
    required_suffix: Option<&str>,
) -> Result<PathBuf> {
    let escape = |reason: &str| ScanError::PathEscape {
        path: referrer.to_path_buf(),
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(escape("the name is empty"));
    }
    if name.contains('\0') {
        return Err(escape("the name contains a NUL byte"));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(escape("absolute paths are not allowed"));
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(escape("drive-qualified paths are not allowed"));
    }
    let parts: Vec<&str> = name.split(['/', '\\']).collect();
    if parts.contains(&"..") {
        return Err(escape("`..` components are not allowed"));
    }
    if let Some(suffix) = required_suffix {
        if !name.ends_with(suffix) {
            return Err(ScanError::ShardIndex {
                path: referrer.to_path_buf(),
                message: format!("shard `{name}` does not end in `{suffix}`"),
            });
        }
    }
    let mut out = folder.to_path_buf();
    for p in parts.iter().filter(|p| !p.is_empty() && **p != ".") {
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<ShardIndex>) -> &'static str {
        r.unwrap_err().code()
    }

    #[test]
    fn parses_an_index() {
        let ix = parse_index(
            Path::new("i.json"),
            br#"{"metadata":{"total_size":24,"other":"x"},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s1.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(ix.total_size, Some(24));
        assert_eq!(ix.len(), 3);
        assert_eq!(
            ix.entries().collect::<Vec<_>>(),
            vec![("a", 0), ("b", 1), ("c", 0)]
        );
        let escaped = parse_index(
            Path::new("i.json"),
            br#"{"weight_map":{"a\u0041":"s.safetensors","b":"s.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            escaped.entries().collect::<Vec<_>>(),
            vec![("aA", 0), ("b", 0)]
        );
        assert_eq!(ix.shard_names(), vec!["s1.safetensors", "s2.safetensors"]);
    }

    #[test]
    fn rejects_bad_indexes() {
        let p = Path::new("i.json");
        assert_eq!(code(parse_index(p, b"[]")), "invalid_shard_index");
        assert_eq!(code(parse_index(p, b"{}")), "invalid_shard_index");
        assert_eq!(
            code(parse_index(p, b"{\"weight_map\":[]}")),
            "invalid_shard_index"
        );
        assert_eq!(
            code(parse_index(p, b"{\"weight_map\":{\"a\":1}}")),
            "invalid_shard_index"
        );
        for twice in [
            &b"{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}"[..],
            b"{\"weight_map\":{\"b\":\"x\",\"a\":\"x\",\"b\":\"x\"}}",
            b"{\"weight_map\":{\"b\":\"x\",\"a\\u0041\":\"x\",\"aA\":\"x\"}}",
        ] {
            let ix = parse_index(p, twice).unwrap();
            assert_eq!(ix.check_unique(p).unwrap_err().code(), "duplicate_key");
        }
        assert_eq!(
            code(parse_index(p, b"{\"weight_map\":{}")),
            "invalid_shard_index"
        );
        assert_eq!(code(parse_index(p, b"\xff")), "invalid_shard_index");
    }

    proptest::proptest! {
        /// The fast path gives the full parser's result whenever it answers, whatever the
        /// spacing, member order or metadata; it answers for every plain index; mutated indexes
        /// make it give up or agree.
        #[test]
        fn fast_path_agrees_with_the_full_parser(
            names in proptest::collection::vec((proptest::sample::select(vec!["", "model.layers.1", "model.layers.12"]), "[a-c.\"é\\\\]{0,4}", 0usize..3), 0..8),
            meta in proptest::option::of(proptest::collection::vec(
                (proptest::sample::select(vec!["total_size", "other", "format"]), 0u8..4, 0u64..1000),
                0..3)),
            ws in proptest::collection::vec(proptest::sample::select(vec!["", " ", "\n", "\t"]), 16),
            metadata_first in proptest::bool::ANY,
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let w = |i: usize| ws[i % ws.len()];
            let shards = ["s1.safetensors", "s2.safetensors", "a\"b"];
            // Names that share a prefix (compared with the previous name's) or not.
            let map: Vec<String> = names.iter().enumerate().map(|(i, (p, n, s))| {
                format!("{}{}{}:{}", w(i), serde_json::to_string(&format!("{p}{n}")).unwrap(), w(i + 1), serde_json::to_string(shards[*s]).unwrap())
            }).collect();
            let mut members = vec![format!("\"weight_map\"{}:{{{}}}", w(3), map.join(","))];
            let mut plain = true;
            if let Some(m) = &meta {
                let body: Vec<String> = m.iter().map(|(k, kind, v)| {
                    plain &= *kind < 2;
                    let value = match kind { 0 => format!("\"{v}\""), 1 => v.to_string(), 2 => format!("{v}.5"), _ => "true".into() };
                    format!("\"{k}\":{}{value}", w(*v as usize))
                }).collect();
                plain &= m.iter().filter(|e| e.0 == "total_size").count() < 2;
                members.insert(usize::from(!metadata_first), format!("\"metadata\":{}{{{}}}", w(5), body.join(",")));
            }
            let text = format!("{}{{{}}}{}", w(6), members.join(","), w(7));
            let full = parse_full(Path::new("x"), &text);
            match parse_fast(&text) {
                Some(fast) => proptest::prop_assert_eq!(Some(fast), full.ok()),
                None => proptest::prop_assert!(!plain || text.contains('\\') || full.is_err(), "gave up on {}", text),
            }
            let mut bytes = text.into_bytes();
            let i = cut.index(bytes.len());
            bytes[i] = byte;
            if let Ok(mutated) = std::str::from_utf8(&bytes) {
                if let Some(fast) = parse_fast(mutated) {
                    proptest::prop_assert_eq!(Some(fast), parse_full(Path::new("x"), mutated).ok());
                }
            }
        }
    }

    #[test]
    fn confines_shard_names() {
        let r = Path::new("i.json");
        let f = Path::new("/adapter");
        let bad = [
            "/etc/passwd.safetensors",
            "\\x.safetensors",
            "C:x.safetensors",
            "../x.safetensors",
            "a/../../x.safetensors",
            "a\\..\\x.safetensors",
            "",
        ];
        for name in bad {
            assert_eq!(
                confine(r, f, name, Some(".safetensors"))
                    .unwrap_err()
                    .code(),
                "path_escape",
                "{name}"
            );
        }
        assert_eq!(
            confine(r, f, "x.bin", Some(".safetensors"))
                .unwrap_err()
                .code(),
            "invalid_shard_index"
        );
        assert_eq!(
            confine(r, f, "sub/./x.safetensors", Some(".safetensors")).unwrap(),
            Path::new("/adapter/sub/x.safetensors")
        );
    }
}
