//! The one way files are opened: regular files only (a FIFO or device is refused before any read),
//! bounded sizes, and the symlink policy.
//!
//! May use: `error`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Result, ScanError};

/// Bounds on what a header may contain. The defaults follow the reference implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted header length N, in bytes (the reference accepts up to 100,000,000).
    pub max_header_bytes: u64,
    /// Largest number of tensors in one file.
    pub max_tensors: usize,
    /// Largest number of dimensions of one tensor.
    pub max_dims: usize,
    /// Largest accepted shard index (`*.index.json`) or adapter config, in bytes.
    pub max_index_bytes: u64,
    /// What to do with symbolic links.
    pub symlinks: SymlinkPolicy,
}

/// What to do with symbolic links among the files an adapter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SymlinkPolicy {
    /// Follow them wherever they point (the Hugging Face cache links `snapshots/` into `blobs/`).
    #[default]
    Follow,
    /// Follow them only when the target stays inside the adapter folder.
    Inside,
    /// Refuse them.
    Refuse,
}

impl SymlinkPolicy {
    /// Parse `follow`, `inside` or `refuse`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "follow" => Some(Self::Follow),
            "inside" => Some(Self::Inside),
            "refuse" => Some(Self::Refuse),
            _ => None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 100_000_000,
            max_tensors: 10_000_000,
            max_dims: 64,
            max_index_bytes: 200_000_000,
            symlinks: SymlinkPolicy::Follow,
        }
    }
}

/// What a file was when it was read: device, inode, size and modification time (the size
/// alone where the platform has no inode). A later read compares it, so a file replaced in the
/// meantime (by another save, or by a link) is refused instead of read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Identity {
    /// The identity of an open file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Self {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            Self {
                size: meta.len(),
                ..Self::default()
            }
        }
    }
}

/// Open `path` for reading without blocking and check, before any read, that it is a regular file.
pub(crate) fn open_regular(path: &Path, limits: &Limits) -> Result<(File, u64)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
        if limits.symlinks == SymlinkPolicy::Refuse {
            flags |= libc::O_NOFOLLOW;
        }
        opts.custom_flags(flags);
    }
    if limits.symlinks == SymlinkPolicy::Refuse {
        let meta = std::fs::symlink_metadata(path).map_err(|e| ScanError::io(path, e))?;
        if meta.file_type().is_symlink() {
            return Err(ScanError::NotRegularFile {
                path: path.to_path_buf(),
                kind: "symbolic link, and following links is turned off",
            });
        }
    }
    let file = opts.open(path).map_err(|e| ScanError::io(path, e))?;
    let meta = file.metadata().map_err(|e| ScanError::io(path, e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(ScanError::NotRegularFile {
            path: path.to_path_buf(),
            kind: file_kind(ft),
        });
    }
    Ok((file, meta.len()))
}

fn file_kind(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "FIFO";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_char_device() {
            return "character device";
        }
        if ft.is_block_device() {
            return "block device";
        }
    }
    if ft.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// What a small file read whole is: its name in messages, and the error its size limit gives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SmallFile {
    /// `*.safetensors.index.json`.
    Index,
    /// `adapter_config.json`.
    AdapterConfig,
    /// A model's `config.json`.
    ModelConfig,
    /// A config file handed over by the caller (the bindings' reader).
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    Config,
}

impl SmallFile {
    fn what(self) -> &'static str {
        match self {
            Self::Index => "shard index",
            Self::AdapterConfig => "adapter config",
            Self::ModelConfig => "model config",
            Self::Config => "config",
        }
    }

    /// The error of a file over the size limit.
    fn too_large(self, path: &Path, message: String) -> ScanError {
        match self {
            Self::Index => ScanError::ShardIndex {
                path: path.to_path_buf(),
                message,
            },
            _ => ScanError::Config {
                path: path.to_path_buf(),
                field: None,
                message,
            },
        }
    }
}

/// Read a whole small file (a JSON index or config), refusing non-regular files and big ones.
pub(crate) fn read_small_file(path: &Path, limits: &Limits, kind: SmallFile) -> Result<Vec<u8>> {
    read_small_file_into(path, limits, kind, Vec::new())
}

/// As [`read_small_file`], into `buf` (cleared first; its room is reused).
pub(crate) fn read_small_file_into(
    path: &Path,
    limits: &Limits,
    kind: SmallFile,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>> {
    let (mut file, size) = open_regular(path, limits)?;
    if size > limits.max_index_bytes {
        let message = format!(
            "the {} has {size} bytes, over the limit of {}",
            kind.what(),
            limits.max_index_bytes
        );
        return Err(kind.too_large(path, message));
    }
    buf.clear();
    buf.reserve_exact(usize::try_from(size).unwrap_or(0));
    file.by_ref()
        .take(limits.max_index_bytes + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ScanError::io(path, e))?;
    if buf.len() as u64 != size {
        return Err(ScanError::FileChanged {
            path: path.to_path_buf(),
            before: size,
            after: buf.len() as u64,
        });
    }
    Ok(buf)
}

/// With [`SymlinkPolicy::Inside`], refuse a file whose real location is outside the folder.
pub(crate) fn check_inside(folder: &Path, file: &Path) -> Result<()> {
    let real_folder = folder
        .canonicalize()
        .map_err(|e| ScanError::io(folder, e))?;
    let real_file = file.canonicalize().map_err(|e| ScanError::io(file, e))?;
    if real_file.starts_with(&real_folder) {
        Ok(())
    } else {
        Err(ScanError::PathEscape {
            path: file.to_path_buf(),
            name: file.to_string_lossy().into_owned(),
            reason: format!(
                "a symbolic link resolves to {}, outside {}",
                real_file.display(),
                real_folder.display()
            ),
        })
    }
}
