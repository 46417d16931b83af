//! Tensor entries: one header's names and entries, and all files' tensors indexed as one list.
//!
//! May use: `read::dtype`.

use crate::read::dtype::Dtype;

/// A tensor shape; up to three dimensions (every LoRA factor: 2-D, or 3-D for experts) are stored
/// inline, without an allocation.
pub type Shape = smallvec::SmallVec<[u64; 3]>;

/// Where a tensor's name is in its file's [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameSpan {
    start: u32,
    len: u32,
}

/// The tensor names of one file, in one buffer: a header lists up to millions of names, and one
/// allocation per name costs more than parsing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    text: String,
}

impl Names {
    /// An empty buffer with room for `bytes` of names.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
        }
    }

    /// Add a name. Headers are under 4 GiB (checked before parsing), so spans fit 32 bits.
    pub fn push(&mut self, name: &str) -> NameSpan {
        let start = self.text.len();
        self.text.push_str(name);
        NameSpan {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(name.len()).unwrap_or(u32::MAX),
        }
    }

    /// The name at `span`.
    pub fn get(&self, span: NameSpan) -> &str {
        let start = span.start as usize;
        self.text
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }

    /// Give back spare room.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
    }
}

/// A tensor with its name.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    /// The tensor's name, as written.
    pub name: &'a str,
    /// Its entry.
    pub info: &'a TensorInfo,
}

impl std::ops::Deref for Tensor<'_> {
    type Target = TensorInfo;

    fn deref(&self) -> &TensorInfo {
        self.info
    }
}

/// One tensor entry of a header (its name is in the file's [`Names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Where the tensor's name is.
    pub name_span: NameSpan,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape (empty for a scalar).
    pub shape: Shape,
    /// Start of its bytes, relative to the data section.
    pub begin: u64,
    /// End (exclusive) of its bytes, relative to the data section.
    pub end: u64,
}

impl TensorInfo {
    /// Number of bytes the tensor occupies.
    pub fn nbytes(&self) -> u64 {
        self.end - self.begin
    }
}

/// All tensors of all files: each file's list and names as they were parsed, indexed as one list
/// (the lists are not copied into one: for a million tensors that copy is the largest allocation
/// of a scan).
#[derive(Debug, Clone, Default)]
pub struct Tensors {
    lists: Vec<(Names, Vec<TensorInfo>)>,
    /// The index of each list's first tensor.
    starts: Vec<usize>,
    /// For each block of `BLOCK` tensors, the list holding its first tensor: a lookup starts there.
    block_list: Vec<u32>,
    len: usize,
}

/// Tensors per entry of `Tensors::block_list`.
const BLOCK: usize = 256;

impl Tensors {
    /// One list per file, in file order.
    pub fn new(lists: Vec<(Names, Vec<TensorInfo>)>) -> Self {
        let mut starts = Vec::with_capacity(lists.len());
        let mut len = 0;
        for (_, l) in &lists {
            starts.push(len);
            len += l.len();
        }
        let mut block_list = Vec::with_capacity(len / BLOCK + 1);
        let mut list = 0;
        for first in (0..len).step_by(BLOCK) {
            while list + 1 < starts.len() && starts[list + 1] <= first {
                list += 1;
            }
            block_list.push(u32::try_from(list).unwrap_or(u32::MAX));
        }
        Self {
            lists,
            starts,
            block_list,
            len,
        }
    }

    /// One list of named shapes (names in one buffer; dtype and offsets left unset).
    pub fn from_named<S: AsRef<str>>(named: impl IntoIterator<Item = (S, Shape)>) -> Self {
        let mut names = Names::default();
        let list = named
            .into_iter()
            .map(|(name, shape)| TensorInfo {
                name_span: names.push(name.as_ref()),
                dtype: Dtype::F32,
                shape,
                begin: 0,
                end: 0,
            })
            .collect();
        Self::new(vec![(names, list)])
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No tensors at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors, in order.
    pub fn iter(&self) -> impl Iterator<Item = Tensor<'_>> + Clone {
        self.lists.iter().flat_map(|(names, l)| {
            l.iter().map(move |info| Tensor {
                name: names.get(info.name_span),
                info,
            })
        })
    }

    /// `(file index, tensor)` for every tensor, in order.
    pub fn with_files(&self) -> impl Iterator<Item = (usize, Tensor<'_>)> {
        self.lists.iter().enumerate().flat_map(|(f, (names, l))| {
            l.iter().map(move |info| {
                (
                    f,
                    Tensor {
                        name: names.get(info.name_span),
                        info,
                    },
                )
            })
        })
    }

    /// Tensor `i`.
    pub fn get(&self, i: usize) -> Tensor<'_> {
        let f = self.file_of(i);
        let (names, list) = &self.lists[f];
        let info = &list[i - self.starts[f]];
        Tensor {
            name: names.get(info.name_span),
            info,
        }
    }

    /// The index (in `Scan::files`) of the file that holds tensor `i`.
    pub fn file_of(&self, i: usize) -> usize {
        let Some(&from) = self.block_list.get(i / BLOCK) else {
            return self.starts.len().saturating_sub(1);
        };
        let mut f = from as usize;
        while f + 1 < self.starts.len() && self.starts[f + 1] <= i {
            f += 1;
        }
        f
    }
}

#[cfg(test)]
mod tensors_tests {
    use super::*;

    #[test]
    fn one_index_over_the_files() {
        let t = |names: &mut Names, name: String| TensorInfo {
            name_span: names.push(&name),
            dtype: Dtype::from_name("F32").unwrap(),
            shape: Shape::new(),
            begin: 0,
            end: 0,
        };
        // Empty lists, lists shorter and longer than a block.
        let sizes = [0, 3, 0, 0, 700, 1, 256, 0, 300];
        let lists: Vec<(Names, Vec<TensorInfo>)> = sizes
            .iter()
            .enumerate()
            .map(|(f, &n)| {
                let mut names = Names::default();
                let list = (0..n).map(|i| t(&mut names, format!("{f}.{i}"))).collect();
                (names, list)
            })
            .collect();
        let tensors = Tensors::new(lists);
        assert_eq!(tensors.len(), sizes.iter().sum::<usize>());
        for (i, (f, x)) in tensors.with_files().enumerate() {
            assert_eq!(tensors.file_of(i), f);
            assert_eq!(tensors.get(i).name, x.name);
            assert!(x.name.starts_with(&format!("{f}.")));
        }
        assert!(Tensors::new(Vec::new()).is_empty());
    }
}
