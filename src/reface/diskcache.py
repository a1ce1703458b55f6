"""A per-user cache of arrays that are slow to derive and the same for every scan (the remodel template).

`reface run` is one process per scan, so an in-process cache does not help it: deriving the template head
(cut to its mask, the chin grown, its coarse brain) took ~2 s of every remodel run. The arrays are written
once to `$REFACE_CACHE_DIR` (default `$XDG_CACHE_HOME/reface`, else `~/.cache/reface`) as an uncompressed
npz, and read back in milliseconds. The key hashes everything the arrays derive from: the source files,
the code that derives them, and the numpy and scipy versions, so a change to any of them misses the cache
instead of reading stale arrays. `REFACE_CACHE_DIR=off` turns it off. The cache never holds patient data,
and a cache that cannot be read or written is only slower, never an error. Loads use allow_pickle=False.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

ENV = "REFACE_CACHE_DIR"


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reface"


def key_of(parts: Iterable[str | bytes | Path]) -> str:
    """sha256 over the parts in order; a Path part contributes its file's bytes."""
    import scipy

    digest = hashlib.sha256(f"numpy {np.__version__} scipy {scipy.__version__}".encode())
    for part in parts:
        data = part.read_bytes() if isinstance(part, Path) else part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:24]


def cached_arrays(name: str, parts: Iterable[str | bytes | Path],
                  compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`compute()`'s arrays, read from the cache when an entry with the same key exists, else computed
    and written (atomically: a temp file renamed into place, so concurrent runs never read half a file)."""
    folder = cache_dir()
    if folder is None:
        return compute()
    path = folder / f"{name}-{key_of(parts)}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or unreadable: derive it again
    arrays = compute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only home: slower, not wrong
    return arrays
