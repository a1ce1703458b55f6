"""Checkpoints: generator weights in safetensors + a JSON config that rebuilds the model; no pickles.

The JSON (architecture, scales, training-data description, version) is stored twice: in the
safetensors metadata (so a single file is self-contained) and beside it as `<name>.json` for people.
Training state for `--resume` is a separate tensors-only file loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import RefaceError
from .config import MODEL_FORMAT, MODEL_VERSION, ModelConfig, model_from_dict, to_dict, write_json
from .networks import Generator


def describe(cfg: ModelConfig, **info) -> dict:
    return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "model": to_dict(cfg), **info}


def save_generator(generator: Generator, path: str | Path, **info) -> Path:
    """Write `path` (.safetensors) and `path.with_suffix('.json')`; `info` (data, steps...) goes in both."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = describe(generator.cfg, **info)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in generator.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"reface": json.dumps(meta, sort_keys=True)})
    tmp.chmod(0o644)  # safetensors creates files readable by the owner only
    tmp.replace(path)
    write_json(meta, path.with_suffix(".json"))
    return path


def read_meta(path: str | Path) -> dict:
    """The JSON description embedded in a checkpoint, validated; RefaceError when foreign or corrupt."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RefaceError(f"model checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises several types for garbage input
        raise RefaceError(f"{path} is not a readable safetensors checkpoint ({error})") from error
    if "reface" not in metadata:
        raise RefaceError(f"{path} is not a reface model (no reface metadata)")
    try:
        meta = json.loads(metadata["reface"])
    except json.JSONDecodeError as error:
        raise RefaceError(f"{path}: corrupt reface metadata") from error
    if meta.get("format") != MODEL_FORMAT:
        raise RefaceError(f"{path}: unknown model format {meta.get('format')!r}")
    if meta.get("version") != MODEL_VERSION:
        raise RefaceError(
            f"{path}: model version {meta.get('version')} is not supported (need {MODEL_VERSION})"
        )
    return meta


def load_generator(path: str | Path, device: str = "cpu") -> tuple[Generator, dict]:
    """Rebuild the generator from a checkpoint (eval mode, on `device`) and return it with its metadata."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    cfg = model_from_dict(meta["model"])
    generator = Generator(cfg)
    try:
        tensors = load_file(str(path), device="cpu")
        generator.load_state_dict(tensors, strict=True)
    except RefaceError:
        raise
    except Exception as error:
        raise RefaceError(f"{path}: weights do not match the model config ({error})") from error
    generator.eval().requires_grad_(False)
    return generator.to(device), meta


def save_state(state: dict, path: str | Path) -> Path:
    """Training state (tensors, numbers, nested dicts/lists only) for --resume."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_state(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RefaceError(f"cannot resume from {path} ({error})") from error
