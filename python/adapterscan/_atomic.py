"""Replace several files of a folder at once: all of them land, or none does.

The new files are written into a hidden staging folder beside the target, together with hard
links to every other entry of the current folder, flushed to disk, and then the two folders are
exchanged in one step (``renameat2(RENAME_EXCHANGE)`` on Linux, ``renamex_np(RENAME_SWAP)`` on
macOS). A process killed at any point leaves the target holding either the old complete set or the
new complete set; a leftover staging folder sits beside it (never inside, so no scan mistakes it
for a shard) and is removed by the next save.

May use: the standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

STAGING_MARK = ".adapterscan-tmp-"

_libc: Any = None


def _c_library() -> Any:
    import ctypes.util

    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name, use_errno=True)
        except OSError:
            return None
    return _libc


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically. False when the platform or file system cannot."""
    import ctypes

    libc = _c_library()
    if libc is None:
        return False
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        result = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        fn = libc.renamex_np
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        result = fn(os.fsencode(a), os.fsencode(b), rename_swap)
    else:
        return False
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(target: Path) -> None:
    """Remove staging folders of earlier saves into ``target`` whose process is gone.

    A save interrupted between the two renames of the fallback left the old folder aside
    (``...-old``) and no ``target``: that folder is put back, not removed. Names are compared as
    text (a folder named ``run[1]`` is not a pattern).
    """
    prefix = f".{target.name}{STAGING_MARK}"
    try:
        entries = sorted(e for e in target.parent.iterdir() if e.name.startswith(prefix))
    except OSError:
        return
    for entry in entries:
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        if entry.name.endswith("-old") and not os.path.lexists(target):
            os.rename(entry, target)  # the adapter that was there before the interrupted save
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_file)
    else:
        _link_file(src, dst)


def _link_file(src: str | Path, dst: str | Path) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _new_stage(target: Path) -> Path:
    """A new, empty staging folder beside ``target``, named for this process.

    Made with mode 0777 less the umask, as any new folder is (the kernel applies the umask, so
    no process-wide state is changed); an existing target's mode is copied onto it later.
    """
    prefix = f".{target.name}{STAGING_MARK}{os.getpid()}-"
    for _ in range(100):
        stage = target.parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(stage, 0o777)
        except FileExistsError:
            continue
        return stage
    raise FileExistsError(errno.EEXIST, "no free staging folder name", str(target.parent))


def replace_files(
    target: Path,
    writers: Mapping[str, Callable[[Path], None]],
    *,
    aside: Mapping[str, str] | None = None,
) -> None:
    """Write ``writers`` (file name -> function writing that file) into ``target`` atomically.

    Other entries of an existing ``target`` are kept; those named in ``aside`` (name -> new
    name) are kept under their new name instead (hard links: no byte is copied). Raises
    whatever a writer raises, leaving ``target`` untouched.
    """
    target = Path(os.path.abspath(target))
    if target.is_symlink() and target.is_dir():
        # A link to the adapter folder: the folder it points to is the one replaced.
        target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    stage = _new_stage(target)
    try:
        for name, write in writers.items():
            write(stage / name)
            _fsync_file(stage / name)
        if target.exists():
            shutil.copymode(target, stage)
            for entry in target.iterdir():
                if aside and entry.name in aside:
                    _link_or_copy(entry, stage / aside[entry.name])
                    if entry.name not in writers:
                        continue
                if entry.name in writers:
                    with contextlib.suppress(OSError):
                        shutil.copymode(entry, stage / entry.name)
                    continue
                _link_or_copy(entry, stage / entry.name)
            _fsync_dir(stage)
            if not _exchange(stage, target):
                # No atomic exchange here: fall back to two renames (a brief window in which the
                # folder is absent, never half-written).
                old = stage.with_name(stage.name + "-old")
                os.rename(target, old)
                os.rename(stage, target)
                stage = old
        else:
            _fsync_dir(stage)
            os.rename(stage, target)
            stage = Path()
        _fsync_dir(target.parent)
    finally:
        if stage != Path() and stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
