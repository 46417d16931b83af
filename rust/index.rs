//! Sharded checkpoints: `*.safetensors.index.json` and confinement of the files it names.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;

use crate::error::{Result, ScanError};
use crate::header::{read_small_file, Limits};

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
}

/// Where a tensor name of the index is: a span of the text (start, length), or, when it has
/// escapes or lies beyond 4 GiB, a string of `escaped` (`(i, ESCAPED)`). Twelve bytes an entry
/// with the shard: indexes of a million tensors are common.
#[derive(Debug, Clone, Copy)]
struct KeySpan(u32, u32);

const ESCAPED: u32 = u32::MAX;

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
        self.entries.iter().map(|(k, s)| {
            let name = match *k {
                KeySpan(i, ESCAPED) => self.escaped[i as usize].as_str(),
                KeySpan(a, n) => &self.text[a as usize..a as usize + n as usize],
            };
            (name, *s)
        })
    }
}

/// Read and parse the index at `path`.
pub fn read_index(path: &Path, limits: &Limits) -> Result<ShardIndex> {
    let bytes = read_small_file(path, limits, "shard index")?;
    parse_index_owned(path, bytes)
}

fn schema_error(path: &Path, message: impl Into<String>) -> ScanError {
    ScanError::ShardIndex {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parse index bytes.
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
    let base = text.as_ptr() as usize;
    let mut de = serde_json::Deserializer::from_str(&text);
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
    let Some((shards, entries, escaped, total_size)) = index else {
        return Err(schema_error(path, "no `weight_map` object"));
    };
    let index = ShardIndex {
        text,
        entries,
        escaped,
        shards,
        total_size,
    };
    let mut seen: foldhash::HashSet<&str> = foldhash::HashSet::default();
    seen.reserve(index.len());
    for (name, _) in index.entries() {
        if !seen.insert(name) {
            return Err(ScanError::DuplicateKey {
                path: path.to_path_buf(),
                key: format!("weight_map.{name}"),
            });
        }
    }
    drop(seen);
    Ok(index)
}

struct IndexVisitor {
    base: usize,
}

/// Shard names, `(tensor, shard id)` pairs, escaped names, and `total_size`.
type Parsed = (Vec<String>, Vec<(KeySpan, u32)>, Vec<String>, Option<u64>);

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
        // Shard names repeat for every tensor: intern them (consecutive entries usually share one).
        let mut shards: Vec<String> = Vec::new();
        let mut ids: foldhash::HashMap<String, u32> = foldhash::HashMap::default();
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        let mut last: Option<u32> = None;
        let mut escaped = Vec::new();
        while let Some(CowStr(k)) = map.next_key::<CowStr<'de>>()? {
            let text_span = match &k {
                std::borrow::Cow::Borrowed(s) => u32::try_from(s.as_ptr() as usize - self.base)
                    .ok()
                    .zip(u32::try_from(s.len()).ok().filter(|&n| n != ESCAPED)),
                std::borrow::Cow::Owned(_) => None,
            };
            let span = if let Some((start, len)) = text_span {
                KeySpan(start, len)
            } else {
                let i = u32::try_from(escaped.len())
                    .ok()
                    .filter(|&i| i != ESCAPED)
                    .ok_or_else(|| de::Error::custom("more than 2^32 escaped tensor names"))?;
                escaped.push(k.into_owned());
                KeySpan(i, ESCAPED)
            };
            let v: std::borrow::Cow<'de, str> = map.next_value::<CowStr<'de>>()?.0;
            let id = match last {
                Some(i) if shards[i as usize] == v.as_ref() => i,
                _ => {
                    if let Some(&i) = ids.get(v.as_ref()) {
                        i
                    } else {
                        let i = u32::try_from(shards.len())
                            .map_err(|_| de::Error::custom("too many shards"))?;
                        shards.push(v.to_string());
                        ids.insert(v.into_owned(), i);
                        i
                    }
                }
            };
            last = Some(id);
            out.push((span, id));
        }
        Ok((shards, out, escaped))
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
        assert_eq!(
            code(parse_index(
                p,
                b"{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}"
            )),
            "duplicate_key"
        );
        assert_eq!(
            code(parse_index(p, b"{\"weight_map\":{}")),
            "invalid_shard_index"
        );
        assert_eq!(code(parse_index(p, b"\xff")), "invalid_shard_index");
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
