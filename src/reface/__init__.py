"""reface: de-identify 3D head MRI by remodeling the face around a bit-for-bit preserved brain."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_scan", "deidentify", "deidentify_file", "RefaceError"]


def __getattr__(name: str):
    # Lazy public API, so `import reface` (and `reface --help`) stays fast.
    if name == "load_scan":
        from .io import load_scan

        return load_scan
    if name in ("deidentify", "deidentify_file"):
        from . import deidentify as module

        return getattr(module, name)
    if name == "RefaceError":
        from .errors import RefaceError

        return RefaceError
    raise AttributeError(name)
