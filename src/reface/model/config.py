"""GAN configuration: plain dataclasses that round-trip through JSON (the run folder and the checkpoint).

`ModelConfig` is what a checkpoint needs to rebuild its generator; `TrainConfig` adds the schedule.
Units are in the names: `*_mm` millimetres, `*_vox` voxels at that stage's scale, `*_min` minutes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import RefaceError
from ..geometry import WORK_SHAPE

MODEL_FORMAT = "reface-gan"
MODEL_VERSION = 2  # 2: per-scan fitted-atlas prior (1 stored a cohort mean head in the weights)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the multi-scale generator (and its discriminators)."""

    scales_mm: tuple[int, ...] = (8, 4, 2)  # coarse to fine; each divides the previous one
    g_widths: tuple[int, ...] = (16, 8, 8)  # generator width at full resolution, per stage
    g_levels: int = 2  # U-Net down-sampling levels per stage (x2 each)
    noise_channels: int = 2  # spatial noise channels at every stage's input
    latent_dim: int = 16  # per-sample latent vector (modulates the bottleneck): face shape diversity
    d_widths: tuple[int, ...] = (16, 8, 8)  # discriminator base width, per stage
    d_levels: int = 3  # strided convs per discriminator
    work_shape: tuple[int, int, int] = WORK_SHAPE  # 1 mm working grid
    residual_limit: float = 0.15  # soft bound (tanh) on each stage's change to its base, normalised units

    def __post_init__(self) -> None:
        n = len(self.scales_mm)
        if n == 0 or len(self.g_widths) != n or len(self.d_widths) != n:
            raise RefaceError("model config: scales_mm, g_widths and d_widths need one entry per stage")
        for coarse, fine in zip(self.scales_mm, self.scales_mm[1:], strict=False):
            if coarse % fine or coarse <= fine:
                raise RefaceError(f"model config: scale {fine} mm must divide the coarser {coarse} mm")
        for scale in self.scales_mm:
            self.shape_at(scale)

    def shape_at(self, scale_mm: int) -> tuple[int, int, int]:
        if any(s % scale_mm for s in self.work_shape):
            raise RefaceError(f"model config: working grid {self.work_shape} not divisible by {scale_mm} mm")
        return tuple(s // scale_mm for s in self.work_shape)

    @property
    def n_stages(self) -> int:
        return len(self.scales_mm)

    def stage_in_channels(self, stage: int) -> int:
        """condition + preserved fraction + noise + prior (+ upsampled coarser output for finer stages)."""
        return 3 + self.noise_channels + (1 if stage > 0 else 0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train(cfg, run_dir)` needs; written resolved to RUN_DIR/config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str = "tiny"
    data: str = ""  # cohort folder (BIDS-like or flat folder of T1w NIfTIs)
    packaged: int = 0  # >0: train on this many augmented packaged heads (ROBEX, pydeface mean, phantoms)
    cache: str = ""  # prepared npz cache folder (default RUN_DIR/cache)
    steps: tuple[int, ...] = (1500, 1500, 1500)  # optimisation steps per stage
    time_budget_min: tuple[float, ...] = (
        10.0,
        6.0,
        5.0,
    )  # stop a stage after this many minutes (0: no limit)
    batch_size: int = 4
    patch_vox: tuple[int, ...] = (0, 24, 24)  # training patch edge per stage (0: whole volume)
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 1.0  # R1 gradient penalty weight on real samples
    r1_every: int = 8  # lazy regularisation (StyleGAN2)
    fm_weight: float = 1.0  # batch-statistics feature matching (not per-subject: no identity leak)
    ema_half_life_steps: float = 100.0
    flip_lr: bool = True
    log_every: int = 20
    sample_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # bfloat16 autocast on CUDA only
    num_threads: int = 2  # torch CPU threads (shared machines)

    def __post_init__(self) -> None:
        n = self.model.n_stages
        for name in ("steps", "time_budget_min", "patch_vox"):
            if len(getattr(self, name)) != n:
                raise RefaceError(f"train config: {name} needs {n} entries (one per stage)")
        if self.batch_size < 1:
            raise RefaceError("train config: batch_size must be >= 1")


PRESETS: dict[str, TrainConfig] = {
    # CPU: 8 mm whole head, then 4 mm and 2 mm patches; ~21 min on 2 shared cores.
    "tiny": TrainConfig(),
    # GPU: adds the 1 mm stage, trained on patches; inference tiles it.
    "base": TrainConfig(
        model=ModelConfig(scales_mm=(4, 2, 1), g_widths=(32, 24, 16), d_widths=(32, 24, 16), latent_dim=32),
        preset="base",
        steps=(20000, 20000, 20000),
        time_budget_min=(0.0, 0.0, 0.0),
        batch_size=8,
        patch_vox=(0, 64, 64),
        lr_g=1e-3,
        lr_d=1e-3,
        sample_every=1000,
        checkpoint_every=1000,
        ema_half_life_steps=500.0,
    ),
    "large": TrainConfig(
        model=ModelConfig(
            scales_mm=(4, 2, 1), g_widths=(64, 48, 32), d_widths=(64, 48, 32), latent_dim=64, g_levels=3
        ),
        preset="large",
        steps=(50000, 50000, 50000),
        time_budget_min=(0.0, 0.0, 0.0),
        batch_size=16,
        patch_vox=(0, 96, 96),
        lr_g=5e-4,
        lr_d=5e-4,
        sample_every=2000,
        checkpoint_every=2000,
        ema_half_life_steps=1000.0,
    ),
}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise RefaceError(f"unknown config {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def model_from_dict(data: dict) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(data) - known
    if unknown:
        raise RefaceError(f"model config has unknown fields: {', '.join(sorted(unknown))}")
    return ModelConfig(**{k: _tuples(v) for k, v in data.items()})


def train_from_dict(data: dict) -> TrainConfig:
    data = dict(data)
    model = model_from_dict(data.pop("model", {}))
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(data) - known
    if unknown:
        raise RefaceError(f"train config has unknown fields: {', '.join(sorted(unknown))}")
    return TrainConfig(model=model, **{k: _tuples(v) for k, v in data.items()})


def to_dict(cfg: ModelConfig | TrainConfig) -> dict:
    return asdict(cfg)


def write_json(data: dict, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
