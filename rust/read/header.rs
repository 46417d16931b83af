//! Reading and validating one safetensors header.
//!
//! Only the 8-byte length and the JSON header are read, with plain reads into one buffer; the
//! data section is never read, mapped or paged in. Its size is checked against the file size
//! from `fstat`. The rules are those of the reference implementation (see the crate docs), plus
//! duplicate-key detection, which the reference lacks.
//!
//! May use: `error`, `read::{dtype, table, open, fast}`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer as _;

use crate::error::{OffsetViolation, Result, ScanError};
use crate::read::dtype::Dtype;
use crate::read::fast::Parsed;
use crate::read::open::{open_regular, Identity, Limits};
use crate::read::table::{Names, Shape, Tensor, TensorInfo};

/// A parsed and validated header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The file it came from.
    pub path: PathBuf,
    /// The header length N.
    pub header_len: u64,
    /// The file's size in bytes.
    pub file_size: u64,
    /// `__metadata__`, if present and not null.
    pub metadata: Option<BTreeMap<String, String>>,
    /// The tensors, in the order the header lists them.
    pub tensors: Vec<TensorInfo>,
    /// Their names.
    pub names: Names,
    /// [`name_hash`] of every name, when the duplicate check needed them (empty when
    /// the names were in order): other files' names are compared with them.
    pub(crate) name_hashes: Vec<u64>,
    /// What the file was when its header was read (default for bytes parsed from memory).
    pub identity: Identity,
}

impl Header {
    /// Bytes of tensor data (the data section's length).
    pub fn data_bytes(&self) -> u64 {
        self.file_size - 8 - self.header_len
    }

    /// The tensors with their names, in the order the header lists them.
    pub fn iter(&self) -> impl Iterator<Item = Tensor<'_>> + Clone {
        self.tensors.iter().map(|info| Tensor {
            name: self.names.get(info.name_span),
            info,
        })
    }

    /// The name of `t` (an entry of this header).
    pub fn name(&self, t: &TensorInfo) -> &str {
        self.names.get(t.name_span)
    }
}

/// Read and validate the header of the safetensors file at `path`.
pub fn read_header(path: &Path, limits: &Limits) -> Result<Header> {
    let (mut file, size) = open_regular(path, limits)?;
    if size < 8 {
        return Err(ScanError::HeaderTooSmall {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| read_error(path, size, e))?;
    let n = u64::from_le_bytes(len_bytes);
    if n == 0 {
        return Err(ScanError::EmptyHeader {
            path: path.to_path_buf(),
        });
    }
    if n > limits.max_header_bytes {
        return Err(ScanError::HeaderTooLarge {
            path: path.to_path_buf(),
            len: n,
            limit: limits.max_header_bytes,
        });
    }
    let need = n.checked_add(8).ok_or_else(|| ScanError::HeaderTooLarge {
        path: path.to_path_buf(),
        len: n,
        limit: limits.max_header_bytes,
    })?;
    if need > size {
        return Err(ScanError::HeaderTruncated {
            path: path.to_path_buf(),
            need,
            have: size,
        });
    }
    let n_usize = usize::try_from(n).map_err(|_| ScanError::HeaderTooLarge {
        path: path.to_path_buf(),
        len: n,
        limit: limits.max_header_bytes,
    })?;
    // Each thread reuses one buffer: the bytes of a header are only needed while it is parsed,
    // and fresh pages for every shard of a big folder cost more than the parse.
    HEADER_BUFFER.with_borrow_mut(|buf| {
        // Room for the header at the file's own offset within a page (zeroed only when it grows).
        let room = n_usize.saturating_add(PAGE);
        if buf.len() < room {
            buf.clear();
            buf.resize(room, 0);
        }
        let at = page_aligned_with(buf.as_ptr(), 8);
        let bytes = &mut buf[at..at + n_usize];
        file.read_exact(bytes)
            .map_err(|e| read_error(path, size, e))?;
        let meta = file.metadata().map_err(|e| ScanError::io(path, e))?;
        let after = meta.len();
        if after != size {
            return Err(ScanError::FileChanged {
                path: path.to_path_buf(),
                before: size,
                after,
            });
        }
        let parsed = parse_header(path, bytes, size, limits).map(|mut h| {
            h.identity = Identity::of(&meta);
            h
        });
        if buf.capacity() > MAX_KEPT_BUFFER {
            *buf = Vec::new();
        }
        parsed
    })
}

/// Page size for [`page_aligned_with`] (a multiple of it works as well).
const PAGE: usize = 4096;

/// Where in a buffer starting at `start` the bytes read from file offset `offset` should go so
/// that both sit at the same place within a page. The kernel then copies them several times faster
/// on some CPUs (on AMD EPYC here, a header copied to a page offset 8 bytes after its source's reads
/// at a quarter of the speed: 10 MiB of headers took 4.5 ms to read instead of 1.1 ms).
fn page_aligned_with(start: *const u8, offset: usize) -> usize {
    offset.wrapping_sub(start as usize) % PAGE
}

/// A thread keeps its header buffer up to this size between reads.
const MAX_KEPT_BUFFER: usize = 16 << 20;

thread_local! {
    static HEADER_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn read_error(path: &Path, size: u64, e: std::io::Error) -> ScanError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ScanError::FileChanged {
            path: path.to_path_buf(),
            before: size,
            after: 0,
        }
    } else {
        ScanError::io(path, e)
    }
}

/// Parse and validate header bytes (`buf` holds exactly the N header bytes) of a file of `file_size`.
pub fn parse_header(path: &Path, buf: &[u8], file_size: u64, limits: &Limits) -> Result<Header> {
    // Name spans are 32-bit (whatever the configured limit).
    if u32::try_from(buf.len()).is_err() {
        return Err(ScanError::HeaderTooLarge {
            path: path.to_path_buf(),
            len: buf.len() as u64,
            limit: u64::from(u32::MAX),
        });
    }
    let text = std::str::from_utf8(buf).map_err(|e| ScanError::HeaderEncoding {
        path: path.to_path_buf(),
        offset: 8 + e.valid_up_to() as u64,
    })?;
    let parsed = match crate::read::fast::parse(text, limits.max_tensors) {
        Some(parsed) => parsed,
        None => parse_full(path, text, limits)?,
    };
    let (metadata, names, tensors) = parsed;
    let mut header = Header {
        path: path.to_path_buf(),
        header_len: buf.len() as u64,
        file_size,
        metadata,
        tensors,
        names,
        name_hashes: Vec::new(),
        identity: Identity::default(),
    };
    validate(&mut header, limits)?;
    Ok(header)
}

/// The full JSON parser: any JSON, every error with its position and tensor.
pub(crate) fn parse_full(path: &Path, text: &str, limits: &Limits) -> Result<Parsed> {
    let mut state = ParseState {
        path,
        limits,
        deferred: None,
        current: None,
    };
    let parsed = {
        let mut de = serde_json::Deserializer::from_str(text);
        let result = (&mut de)
            .deserialize_map(HeaderVisitor { state: &mut state })
            .and_then(|v| de.end().map(|()| v));
        match result {
            Ok(v) => v,
            Err(e) => {
                if let Some(err) = state.deferred.take() {
                    return Err(err);
                }
                return Err(json_error(path, &e, state.current.take()));
            }
        }
    };
    Ok(parsed)
}

fn json_error(path: &Path, e: &serde_json::Error, tensor: Option<String>) -> ScanError {
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    ScanError::HeaderJson {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        tensor,
        message,
    }
}

struct ParseState<'p> {
    path: &'p Path,
    limits: &'p Limits,
    /// A typed error found inside the visitor; it wins over the serde error used to stop parsing.
    deferred: Option<ScanError>,
    /// The tensor whose entry is being parsed, to name it in JSON errors.
    current: Option<String>,
}

impl ParseState<'_> {
    fn defer<E: de::Error>(&mut self, err: ScanError) -> E {
        let msg = err.to_string();
        self.deferred = Some(err);
        E::custom(msg)
    }
}

struct HeaderVisitor<'s, 'p> {
    state: &'s mut ParseState<'p>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_, '_> {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object mapping tensor names to entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let state = self.state;
        let mut metadata: Option<Option<BTreeMap<String, String>>> = None;
        let mut tensors = Vec::with_capacity(map.size_hint().unwrap_or(0));
        let mut names = Names::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == "__metadata__" {
                if metadata.is_some() {
                    return Err(state.defer(ScanError::DuplicateKey {
                        path: state.path.to_path_buf(),
                        key,
                    }));
                }
                metadata = Some(map.next_value_seed(MetadataSeed { state: &mut *state })?);
                continue;
            }
            if tensors.len() >= state.limits.max_tensors {
                return Err(state.defer(ScanError::TooManyTensors {
                    path: state.path.to_path_buf(),
                    limit: state.limits.max_tensors,
                }));
            }
            state.current = Some(key);
            let entry = map.next_value_seed(EntrySeed { state: &mut *state })?;
            let name = state.current.take().unwrap_or_default();
            tensors.push(TensorInfo {
                name_span: names.push(&name),
                dtype: entry.0,
                shape: entry.1,
                begin: entry.2 .0,
                end: entry.2 .1,
            });
        }
        Ok((metadata.flatten(), names, tensors))
    }
}

struct MetadataSeed<'s, 'p> {
    state: &'s mut ParseState<'p>,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_, '_> {
    type Value = Option<BTreeMap<String, String>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_, '_> {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings to strings, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let state = self.state;
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: serde_json::Value = map.next_value()?;
            let serde_json::Value::String(value) = value else {
                return Err(state.defer(ScanError::Metadata {
                    path: state.path.to_path_buf(),
                    message: format!("the value of `{key}` is not a string"),
                }));
            };
            if out.contains_key(&key) {
                return Err(state.defer(ScanError::DuplicateKey {
                    path: state.path.to_path_buf(),
                    key: format!("__metadata__.{key}"),
                }));
            }
            out.insert(key, value);
        }
        Ok(Some(out))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_an_object("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_an_object("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_an_object("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_an_object("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_an_object("a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_an_object("an array"))
    }
}

impl MetadataSeed<'_, '_> {
    fn not_an_object<E: de::Error>(self, found: &str) -> E {
        let path = self.state.path.to_path_buf();
        self.state.defer(ScanError::Metadata {
            path,
            message: format!("expected an object of strings or null, found {found}"),
        })
    }
}

struct EntrySeed<'s, 'p> {
    state: &'s mut ParseState<'p>,
}

type Entry = (Dtype, Shape, (u64, u64));

impl<'de> DeserializeSeed<'de> for EntrySeed<'_, '_> {
    type Value = Entry;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_, '_> {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tensor entry object with dtype, shape and data_offsets")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let state = self.state;
        let mut dtype: Option<Dtype> = None;
        let mut shape: Option<Shape> = None;
        let mut offsets: Option<(u64, u64)> = None;
        while let Some(field) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let duplicate = match field.as_ref() {
                "dtype" => {
                    let name: std::borrow::Cow<'de, str> = map.next_value()?;
                    let Some(d) = Dtype::from_name(&name) else {
                        return Err(state.defer(ScanError::UnknownDtype {
                            path: state.path.to_path_buf(),
                            tensor: state.current.clone().unwrap_or_default(),
                            dtype: name.into_owned(),
                        }));
                    };
                    dtype.replace(d).is_some()
                }
                "shape" => shape.replace(map.next_value()?).is_some(),
                "data_offsets" => offsets.replace(map.next_value()?).is_some(),
                _ => {
                    // Parsed as a value (not skipped) so the nesting limit applies, as in the reference.
                    map.next_value::<serde_json::Value>()?;
                    false
                }
            };
            if duplicate {
                return Err(state.defer(ScanError::DuplicateKey {
                    path: state.path.to_path_buf(),
                    key: format!("{}.{field}", state.current.as_deref().unwrap_or("")),
                }));
            }
        }
        let dtype = dtype.ok_or_else(|| de::Error::missing_field("dtype"))?;
        let shape = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
        let offsets = offsets.ok_or_else(|| de::Error::missing_field("data_offsets"))?;
        Ok((dtype, shape, offsets))
    }
}

/// Check every rule that needs the whole header: sizes, offsets, coverage, duplicates.
fn validate(header: &mut Header, limits: &Limits) -> Result<()> {
    let path = &header.path;
    for t in header.iter() {
        if t.shape.len() > limits.max_dims {
            return Err(ScanError::Shape {
                path: path.clone(),
                tensor: t.name.to_string(),
                message: format!(
                    "{} dimensions, the limit is {}",
                    t.shape.len(),
                    limits.max_dims
                ),
            });
        }
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ScanError::Shape {
                path: path.clone(),
                tensor: t.name.to_string(),
                message: format!("the element count of {:?} overflows 64 bits", t.shape),
            })?;
        let bits = numel
            .checked_mul(t.dtype.bits())
            .ok_or_else(|| ScanError::Shape {
                path: path.clone(),
                tensor: t.name.to_string(),
                message: format!(
                    "the bit count of {:?} x {} overflows 64 bits",
                    t.shape, t.dtype
                ),
            })?;
        if bits % 8 != 0 {
            return Err(ScanError::MisalignedTensor {
                path: path.clone(),
                tensor: t.name.to_string(),
                bits,
            });
        }
        if t.end >= t.begin && t.end - t.begin != bits / 8 {
            return Err(ScanError::TensorSize {
                path: path.clone(),
                tensor: t.name.to_string(),
                expected: bits / 8,
                actual: t.end - t.begin,
            });
        }
    }
    header.name_hashes = check_duplicate_names(header)?;
    let data_end = check_offsets(header)?;
    let expected = 8 + header.header_len + data_end;
    if expected != header.file_size {
        return Err(ScanError::IncompleteFile {
            path: path.clone(),
            expected,
            actual: header.file_size,
        });
    }
    Ok(())
}

/// A hash of a tensor name, the same in every file (and thread) of a process.
pub(crate) fn name_hash(name: &str) -> u64 {
    use std::hash::BuildHasher as _;
    const STATE: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5eed);
    STATE.hash_one(name)
}

/// Whether the `n` values are pairwise distinct. A bitmap of at least 16 bits per value marks
/// each value's slot, and a second one the slots met twice; only the values in those (a few per
/// hundred) are then compared exactly. A set of every value costs several times more.
pub(crate) fn all_distinct<I: Iterator<Item = u64> + Clone>(values: I, n: usize) -> bool {
    let bits = n.saturating_mul(16).next_power_of_two().max(1 << 10);
    let shift = 64 - bits.trailing_zeros();
    let slot = |v: u64| {
        let b = (v.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize;
        (b / 64, 1u64 << (b % 64))
    };
    let mut seen = vec![0u64; bits / 64];
    let mut twice = vec![0u64; bits / 64];
    let mut any_twice = false;
    for v in values.clone() {
        let (word, bit) = slot(v);
        if seen[word] & bit == 0 {
            seen[word] |= bit;
        } else {
            twice[word] |= bit;
            any_twice = true;
        }
    }
    if !any_twice {
        return true;
    }
    // A repeated value's slot is met twice: compare the values in such slots.
    let mut met: foldhash::HashSet<u64> = foldhash::HashSet::default();
    values
        .filter(|&v| {
            let (word, bit) = slot(v);
            twice[word] & bit != 0
        })
        .all(|v| met.insert(v))
}

/// Refuse a name listed twice. Returns the names' hashes when they were needed.
fn check_duplicate_names(header: &Header) -> Result<Vec<u64>> {
    // Writers usually list names in order: strictly increasing names cannot repeat.
    if header
        .tensors
        .windows(2)
        .all(|w| header.name(&w[0]) < header.name(&w[1]))
    {
        return Ok(Vec::new());
    }
    let hashes: Vec<u64> = header.iter().map(|t| name_hash(t.name)).collect();
    if all_distinct(hashes.iter().copied(), hashes.len()) {
        return Ok(hashes);
    }
    // A repeated name, or two names with one hash: settle it exactly.
    let mut seen: foldhash::HashSet<&str> = foldhash::HashSet::default();
    seen.reserve(header.tensors.len());
    for t in header.iter() {
        if !seen.insert(t.name) {
            return Err(ScanError::DuplicateKey {
                path: header.path.clone(),
                key: t.name.to_string(),
            });
        }
    }
    Ok(hashes)
}

/// Sort by `(begin, end)` and check that the ranges tile `[0, end)` exactly; collect every
/// violation. Returns the length of the data section the header describes.
fn check_offsets(header: &Header) -> Result<u64> {
    // Sorted by offsets (names break ties, for stable messages), as plain keys: writers such as
    // MLX store the data in another order than the header lists it.
    let mut keys: Vec<(u64, u64, u32)> = (header.tensors.iter().enumerate())
        .map(|(i, t)| (t.begin, t.end, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let at = |i: u32| Tensor {
        name: header.name(&header.tensors[i as usize]),
        info: &header.tensors[i as usize],
    };
    keys.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| at(a.2).name.cmp(at(b.2).name))
    });
    let order = keys.into_iter().map(|k| at(k.2));
    let mut violations = Vec::new();
    let mut expected = 0u64;
    let mut previous: Option<Tensor<'_>> = None;
    for t in order {
        if t.end < t.begin {
            violations.push(OffsetViolation {
                tensor: t.name.to_string(),
                reason: format!(
                    "data_offsets [{}, {}] end before they begin",
                    t.begin, t.end
                ),
            });
            continue;
        }
        if t.begin > expected {
            let reason = match previous {
                None => format!("the first tensor begins at {}, not at 0", t.begin),
                Some(p) => format!(
                    "a gap of {} bytes after `{}` (bytes {}..{} belong to no tensor)",
                    t.begin - expected,
                    p.name,
                    expected,
                    t.begin
                ),
            };
            violations.push(OffsetViolation {
                tensor: t.name.to_string(),
                reason,
            });
        } else if t.begin < expected {
            let p = previous.map_or("", |p| p.name);
            let reason = match previous {
                Some(p) if p.begin == t.begin && p.end == t.end => {
                    format!(
                        "aliases `{p}`: both use bytes {}..{}",
                        t.begin,
                        t.end,
                        p = p.name
                    )
                }
                _ => format!(
                    "data_offsets [{}, {}] overlap `{p}`, which ends at {expected}",
                    t.begin, t.end
                ),
            };
            violations.push(OffsetViolation {
                tensor: t.name.to_string(),
                reason,
            });
        }
        expected = expected.max(t.end);
        previous = Some(t);
    }
    if violations.is_empty() {
        Ok(expected)
    } else {
        Err(ScanError::Offsets {
            path: header.path.clone(),
            violations,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::read::open::{Limits, SymlinkPolicy};
    use proptest::prelude::*;
    use std::io::Write;

    /// The bytes of a valid safetensors file holding `(name, dtype, shape)` tensors end to end.
    pub(crate) fn tensors_file(tensors: &[(&str, &str, &[u64])]) -> Vec<u8> {
        let mut obj = serde_json::Map::new();
        let mut off = 0u64;
        for (n, d, s) in tensors {
            let len = s.iter().product::<u64>() * Dtype::from_name(d).unwrap().bits() / 8;
            obj.insert(
                (*n).to_string(),
                serde_json::json!({"dtype": d, "shape": s, "data_offsets": [off, off + len]}),
            );
            off += len;
        }
        file_bytes(&serde_json::to_string(&obj).unwrap(), off as usize)
    }

    /// Build the bytes of a safetensors file from a header text and a data length.
    pub(crate) fn file_bytes(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data_len));
        out
    }

    fn parse(header: &str, data_len: usize) -> Result<Header> {
        let bytes = file_bytes(header, data_len);
        parse_header(
            Path::new("x.safetensors"),
            &bytes[8..8 + header.len()],
            bytes.len() as u64,
            &Limits::default(),
        )
    }

    fn code(r: Result<Header>) -> &'static str {
        r.expect_err("should fail").code()
    }

    #[test]
    fn parses_a_valid_header() {
        let h = parse(
            r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2,3],"data_offsets":[16,28]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            28,
        )
        .unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.name(&h.tensors[0]), "b");
        assert_eq!(h.tensors[0].shape.as_slice(), &[2, 3]);
        assert_eq!(h.tensors[0].dtype.name(), "F16");
        assert_eq!(h.metadata.as_ref().unwrap()["format"], "pt");
        assert_eq!(h.data_bytes(), 28);
    }

    #[test]
    fn accepts_mlx_null_metadata_scalars_zero_dims_and_whitespace() {
        let h = parse(
            r#"  {"__metadata__":null,"s":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"z":{"dtype":"F32","shape":[0,5],"data_offsets":[2,2]}}    "#,
            2,
        )
        .unwrap();
        assert!(h.metadata.is_none());
        assert_eq!(h.tensors.len(), 2);
    }

    #[test]
    fn accepts_unknown_fields_and_empty_header_object() {
        assert!(parse(
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":[1,{"x":2}]}}"#,
            1
        )
        .is_ok());
        assert!(parse("{}", 0).is_ok());
    }

    #[test]
    fn rejects_each_malformed_class_with_its_own_code() {
        let t = |dt: &str, shape: &str, off: &str| {
            format!(r#"{{"t":{{"dtype":"{dt}","shape":{shape},"data_offsets":{off}}}}}"#)
        };
        assert_eq!(code(parse("[]", 0)), "header_json");
        assert_eq!(code(parse("{\"a\":1}", 0)), "header_json");
        assert_eq!(code(parse("{} \0", 0)), "header_json");
        assert_eq!(code(parse("\u{feff}{}", 0)), "header_json");
        assert_eq!(code(parse(&t("f32", "[1]", "[0,4]"), 4)), "unknown_dtype");
        assert_eq!(code(parse(&t("F32", "[-1]", "[0,4]"), 4)), "header_json");
        assert_eq!(code(parse(&t("F32", "[2.0]", "[0,8]"), 8)), "header_json");
        assert_eq!(code(parse(&t("F32", "[2e0]", "[0,8]"), 8)), "header_json");
        assert_eq!(
            code(parse(&t("F32", "[18446744073709551616]", "[0,8]"), 8)),
            "header_json"
        );
        assert_eq!(code(parse(&t("F32", "[1]", "[0,4,8]"), 8)), "header_json");
        assert_eq!(
            code(parse(&t("F32", "[2,9223372036854775807]", "[0,8]"), 8)),
            "invalid_shape"
        );
        // The element count wraps to 0 in 64-bit arithmetic without checks.
        assert_eq!(
            code(parse(&t("F32", "[65536,65536,65536,65536]", "[0,0]"), 0)),
            "invalid_shape"
        );
        assert_eq!(
            code(parse(&t("F4", "[3]", "[0,2]"), 2)),
            "misaligned_tensor"
        );
        assert_eq!(
            code(parse(&t("F32", "[3]", "[0,8]"), 8)),
            "tensor_size_mismatch"
        );
        // A dimension of 2^32+2 must not be truncated to 2.
        assert_eq!(
            code(parse(&t("U8", "[4294967298]", "[0,2]"), 2)),
            "tensor_size_mismatch"
        );
        assert_eq!(code(parse(&t("F32", "[1]", "[4,0]"), 4)), "invalid_offsets");
        assert_eq!(code(parse(&t("F32", "[1]", "[4,8]"), 8)), "invalid_offsets");
        assert_eq!(code(parse(&t("F32", "[1]", "[0,4]"), 5)), "incomplete_file");
        assert_eq!(code(parse(&t("F32", "[1]", "[0,4]"), 3)), "incomplete_file");
        assert_eq!(
            code(parse(r#"{"t":{"shape":[1],"data_offsets":[0,4]}}"#, 4)),
            "header_json"
        );
        assert_eq!(
            code(parse(r#"{"__metadata__":{"a":1}}"#, 0)),
            "invalid_metadata"
        );
        assert_eq!(code(parse(r#"{"__metadata__":[]}"#, 0)), "invalid_metadata");
        assert_eq!(
            code(parse(r#"{"__metadata__":{},"__metadata__":{}}"#, 0)),
            "duplicate_key"
        );
        assert_eq!(
            code(parse(
                r#"{"t":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                1
            )),
            "duplicate_key"
        );
        assert_eq!(
            code(parse(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                2
            )),
            "duplicate_key"
        );
        assert_eq!(code(parse("{\"x\":NaN}", 0)), "header_json");
        assert_eq!(code(parse("{\"\\ud800\":1}", 0)), "header_json");
        let deep = format!(
            "{{\"a\":{{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":{}{}}}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(code(parse(&deep, 1)), "header_json");
    }

    #[test]
    fn lists_every_offset_violation() {
        let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                    "b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]},
                    "c":{"dtype":"U8","shape":[2],"data_offsets":[8,10]},
                    "d":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}}"#;
        let err = parse(h, 10).unwrap_err();
        let details = err.details();
        assert_eq!(details.len(), 3, "{details:?}");
        assert!(details[0].contains("`b`") && details[0].contains("overlap"));
        assert!(details[1].contains("`c`") && details[1].contains("gap"));
        assert!(details[2].contains("`d`") && details[2].contains("aliases"));
    }

    #[test]
    fn json_errors_carry_line_column_and_tensor() {
        let err = parse(
            "{\"t\":{\"dtype\":\"F32\",\n\"shape\":[1,],\"data_offsets\":[0,4]}}",
            4,
        )
        .unwrap_err();
        let (line, col) = err.line_column().unwrap();
        assert_eq!(line, 2);
        assert!(col > 0);
        assert_eq!(err.tensor(), Some("t"));
    }

    #[test]
    fn utf8_error_names_the_byte_offset() {
        let mut bytes = file_bytes("{\"ab\":{}}", 0);
        bytes[8 + 3] = 0xff;
        let err = parse_header(
            Path::new("x"),
            &bytes[8..],
            bytes.len() as u64,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "header_encoding");
        assert_eq!(err.offset(), Some(11));
    }

    #[test]
    fn reads_files_and_checks_the_length_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
            p
        };
        let limits = Limits::default();
        let code_of = |p: &Path| read_header(p, &limits).unwrap_err().code();
        assert_eq!(code_of(&write("empty", b"")), "header_too_small");
        assert_eq!(code_of(&write("five", b"12345")), "header_too_small");
        assert_eq!(code_of(&write("zero", &0u64.to_le_bytes())), "empty_header");
        assert_eq!(
            code_of(&write("huge", &u64::MAX.to_le_bytes())),
            "header_too_large"
        );
        assert_eq!(
            code_of(&write("big", &100_000_001u64.to_le_bytes())),
            "header_too_large"
        );
        assert_eq!(
            code_of(&write("short", &100u64.to_le_bytes())),
            "header_truncated"
        );
        assert_eq!(code_of(&dir.path().join("missing")), "not_found");
        assert_eq!(code_of(dir.path()), "not_regular_file");
        let ok = write(
            "ok",
            &file_bytes(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        );
        assert_eq!(read_header(&ok, &limits).unwrap().tensors.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_fifos_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipe.safetensors");
        // mkfifo(1) keeps this crate free of unsafe code.
        let status = std::process::Command::new("mkfifo").arg(&p).status();
        if status.is_ok_and(|s| s.success()) {
            let err = read_header(&p, &Limits::default()).unwrap_err();
            assert_eq!(err.code(), "not_regular_file");
            assert!(err.to_string().contains("FIFO"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_unless_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.safetensors");
        std::fs::write(
            &target,
            file_bytes(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        )
        .unwrap();
        let link = dir.path().join("link.safetensors");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_header(&link, &Limits::default()).is_ok());
        let strict = Limits {
            symlinks: SymlinkPolicy::Refuse,
            ..Limits::default()
        };
        assert_eq!(
            read_header(&link, &strict).unwrap_err().code(),
            "not_regular_file"
        );
    }

    fn dtype_strategy() -> impl Strategy<Value = &'static str> {
        prop::sample::select(
            crate::read::dtype::DTYPES
                .iter()
                .filter(|(_, b)| b % 8 == 0)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>(),
        )
    }

    proptest! {
        /// Any header a writer produces (tensors laid end to end) parses back identically.
        #[test]
        fn written_headers_parse_back(
            entries in prop::collection::vec(
                ("[a-zA-Z0-9_.\\-\"\\\\é]{0,12}", dtype_strategy(), prop::collection::vec(0u64..5, 0..4)),
                0..12),
            meta in prop::option::of(prop::collection::btree_map("[a-z_]{1,6}", "[ -~]{0,8}", 0..3)),
            pad in 0usize..8,
        ) {
            let mut seen = std::collections::BTreeSet::new();
            let entries: Vec<_> = entries.into_iter().filter(|e| seen.insert(e.0.clone())).collect();
            let mut obj = serde_json::Map::new();
            if let Some(m) = &meta {
                obj.insert("__metadata__".into(), serde_json::to_value(m).unwrap());
            }
            let mut offset = 0u64;
            let mut expected = Vec::new();
            for (name, dtype, shape) in &entries {
                let d = Dtype::from_name(dtype).unwrap();
                let n = shape.iter().product::<u64>() * d.bits() / 8;
                obj.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}));
                expected.push((name.clone(), d, shape.clone(), offset, offset + n));
                offset += n;
            }
            let mut text = serde_json::to_string(&obj).unwrap();
            text.push_str(&" ".repeat(pad));
            let h = parse(&text, offset as usize).unwrap();
            let mut got: Vec<_> = h.iter().map(|t| (t.name.to_string(), t.dtype, t.shape.to_vec(), t.begin, t.end)).collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(got, expected);
            prop_assert_eq!(h.metadata, meta);
        }

        /// The fast path gives the full parser's result whenever it answers, whatever the
        /// spacing, field order, metadata or dtype; mutated headers make it give up or agree.
        #[test]
        fn fast_path_agrees_with_the_full_parser(
            entries in prop::collection::vec(
                (prop::sample::select(vec!["", "base_model.model.layers.", "base_model.model.layers.1"]), "[a-z0-9_.\\\"é]{0,10}", dtype_strategy(), prop::collection::vec(0u64..1_000_000, 0..4), any::<u64>(), any::<u64>()),
                0..8),
            meta in prop::option::of(prop::collection::vec(("[a-z\\\"]{0,4}", "[ -~]{0,6}"), 0..3)),
            ws in prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\t", "\r\n  "]), 64),
            order in any::<bool>(),
            compact in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            // Compact: no whitespace at all, as writers print headers (the template path).
            let w = |i: usize| if compact { "" } else { ws[i % ws.len()] };
            let mut text = format!("{}{{", w(0));
            let mut parts = Vec::new();
            if let Some(m) = &meta {
                let body: Vec<String> = m.iter().enumerate().map(|(i, (k, v))| {
                    format!("{}{}{}:{}{}", w(i + 1), serde_json::to_string(k).unwrap(), w(i + 2), w(i + 3), serde_json::to_string(v).unwrap())
                }).collect();
                parts.push(format!("\"__metadata__\":{{{}}}", body.join(",")));
            }
            // Names that share a prefix (compared with the previous name's) or not.
            for (i, (prefix, name, dtype, shape, b, e)) in entries.iter().enumerate() {
                let name = format!("{prefix}{name}");
                let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
                let fields = [
                    format!("\"dtype\"{}:{}\"{dtype}\"", w(i), w(i + 5)),
                    format!("\"shape\":[{}{}]", w(i + 7), shape.join(&format!("{},", w(i + 2)))),
                    format!("\"data_offsets\":[{b}{},{}{e}]", w(i + 3), w(i + 4)),
                ];
                let fields = if order { fields.join(",") } else { format!("{},{},{}", fields[2], fields[0], fields[1]) };
                parts.push(format!("{}{}{}:{{{fields}}}", w(i + 6), serde_json::to_string(&name).unwrap(), w(i)));
            }
            text.push_str(&parts.join(","));
            text.push('}');
            text.push_str(w(10));
            let limits = Limits::default();
            let full = parse_full(Path::new("x"), &text, &limits);
            match crate::read::fast::parse(&text, limits.max_tensors) {
                Some(fast) => prop_assert_eq!(Some(fast), full.ok()),
                None => prop_assert!(text.contains('\\') || full.is_err(), "gave up on {}", text),
            }
            // One byte changed anywhere: the fast path gives up or agrees with the full parser.
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let i = cut.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(mutated) = std::str::from_utf8(&bytes) {
                if let Some(fast) = crate::read::fast::parse(mutated, limits.max_tensors) {
                    prop_assert_eq!(Some(fast), parse_full(Path::new("x"), mutated, &limits).ok());
                }
            }
        }

        /// The bitmap test agrees with a set, for values that share bitmap slots too.
        #[test]
        fn all_distinct_agrees_with_a_set(
            values in prop::collection::vec(prop_oneof![any::<u64>(), 0u64..8, (0u64..64).prop_map(|x| x << 58)], 0..3000),
        ) {
            let mut set = std::collections::HashSet::new();
            let expected = values.iter().all(|v| set.insert(*v));
            prop_assert_eq!(all_distinct(values.iter().copied(), values.len()), expected);
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), size in 0u64..1024) {
            let _ = parse_header(Path::new("x"), &bytes, size.max(bytes.len() as u64 + 8), &Limits::default());
        }
    }
}
