//! Sharded checkpoints: `*.safetensors.index.json` and confinement of the files it names.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;

use crate::error::{Result, ScanError};
use crate::header::{read_small_file, Limits};

/// A parsed shard index.
#[derive(Debug, Clone, Default)]
pub struct ShardIndex {
    /// The distinct shard file names, in order of first appearance.
    pub shards: Vec<String>,
    /// `(tensor name, index into shards)` in the order of the index.
    pub weight_map: Vec<(String, u32)>,
    /// `metadata.total_size`, when present and an integer.
    pub total_size: Option<u64>,
}

impl ShardIndex {
    /// The distinct shard names, in order of first appearance.
    pub fn shard_names(&self) -> &[String] {
        &self.shards
    }
}

/// Read and parse the index at `path`.
pub fn read_index(path: &Path, limits: &Limits) -> Result<ShardIndex> {
    let bytes = read_small_file(path, limits, "shard index")?;
    parse_index(path, &bytes)
}

fn schema_error(path: &Path, message: impl Into<String>) -> ScanError {
    ScanError::ShardIndex {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parse index bytes.
pub fn parse_index(path: &Path, bytes: &[u8]) -> Result<ShardIndex> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        schema_error(
            path,
            format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
        )
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = (&mut de)
        .deserialize_map(IndexVisitor)
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
    let Some(index) = index else {
        return Err(schema_error(path, "no `weight_map` object"));
    };
    let mut names: Vec<&str> = index.weight_map.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    if let Some([first, _]) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ScanError::DuplicateKey {
            path: path.to_path_buf(),
            key: format!("weight_map.{first}"),
        });
    }
    Ok(index)
}

struct IndexVisitor;

impl<'de> Visitor<'de> for IndexVisitor {
    type Value = Option<ShardIndex>;

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
                    weight_map = Some(map.next_value_seed(WeightMapSeed)?);
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
        Ok(weight_map.map(|(shards, weight_map)| ShardIndex {
            shards,
            weight_map,
            total_size,
        }))
    }
}

struct WeightMapSeed;

/// Shard names, and `(tensor, shard id)` pairs.
type Interned = (Vec<String>, Vec<(String, u32)>);

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
        while let Some(k) = map.next_key::<String>()? {
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
            out.push((k, id));
        }
        Ok((shards, out))
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
        assert_eq!(ix.weight_map.len(), 3);
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
