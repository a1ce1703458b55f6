"""reface: de-identify 3D head MRI by remodeling the face around a bit-for-bit preserved brain."""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

__all__ = ["__version__", "load_scan", "deidentify", "deidentify_file", "RefaceError"]


def __getattr__(name: str):
    # Lazy public API, so `import reface` (and `reface --help`) stays fast.
    if name == "load_scan":
        from .io import load_scan

        return load_scan
    if name in ("deidentify", "deidentify_file"):
        # `from . import deidentify` would ask this hook again (the function and its module share a name)
        module = import_module(".deidentify", __name__)
        globals().update(deidentify=module.deidentify, deidentify_file=module.deidentify_file)
        return globals()[name]
    if name == "RefaceError":
        from .errors import RefaceError

        return RefaceError
    raise AttributeError(name)
