"""The conditional multi-scale generator and its per-scale patch discriminators (PyTorch, 3D).

Every stage sees the brain condition (normalised intensities inside the preserved region, zero
elsewhere, block-averaged to its scale), the preserved fraction, spatial noise and a per-sample latent;
finer stages also see the upsampled coarser output and predict a residual on top of it. Each stage's
output is composited with the condition inside the generator, so only non-brain voxels are learnt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def assert_shape(x: torch.Tensor, shape: list[int | None]) -> None:
    if x.ndim != len(shape) or any(s is not None and s != n for n, s in zip(x.shape, shape, strict=True)):
        raise AssertionError(f"tensor shape {tuple(x.shape)} does not match {shape}")


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv3d(cin, cout, 3, stride=stride, padding=1), _act())


class StageGenerator(nn.Module):
    """One scale: a small 3D U-Net whose bottleneck is modulated by the latent (FiLM)."""

    def __init__(self, in_channels: int, width: int, levels: int, latent_dim: int, residual: bool,
                 limit: float = 1.0):
        super().__init__()
        self.levels, self.residual, self.limit = levels, residual, limit
        widths = [width * 2**i for i in range(levels + 1)]  # full res .. bottleneck
        self.inp = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1], stride=2) for i in range(levels))
        self.mid = nn.ModuleList([ConvBlock(widths[-1], widths[-1]), ConvBlock(widths[-1], widths[-1])])
        self.film = nn.Linear(latent_dim, 2 * widths[-1])
        self.up = nn.ModuleList(
            ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels))
        )
        self.out = nn.Conv3d(widths[0], 1, 1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        if residual:  # a finer stage starts as the identity on its base (coarse head + prior detail)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        else:
            self.out.weight.data.mul_(0.1)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        # x [N, C, D, H, W], z [N, L], base [N, 1, D, H, W]
        x = x.contiguous(memory_format=torch.channels_last_3d)  # oneDNN's fast 3D conv path (~2x on CPU)
        skips = []
        h = self.inp(x)
        for down in self.down:
            skips.append(h)
            h = down(h)
        gamma, beta = self.film(z)[:, :, None, None, None].chunk(2, dim=1)
        h = self.mid[0](h)
        h = h * (1 + gamma) + beta
        h = self.mid[1](h)
        for up, skip in zip(self.up, reversed(skips), strict=True):
            h = F.interpolate(h, size=skip.shape[2:], mode="trilinear", align_corners=False)
            h = up(torch.cat([h, skip], dim=1))
        out = self.out(h)
        # soft-bounded change: identity near 0 (the finer stages start as the identity), never a blow-up
        # that hands the discriminator a trivial fake (the first CPU run diverged without it)
        return base + self.limit * torch.tanh(out / self.limit)


class Generator(nn.Module):
    """Stages coarse to fine; `stage(k, ...)` runs one, `forward` runs them all on whole volumes.

    Every stage is residual over a per-scan prior (model/prior.py: a population-average head fitted to
    the patient's brain), Laplacian-pyramid style: stage 0 adds to the coarse prior, stage k adds to the
    upsampled coarser output plus the prior's detail at its scale. The prior is given per call (one
    pyramid level per stage), never stored in the weights.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.stages = nn.ModuleList(
            StageGenerator(
                cfg.stage_in_channels(k), cfg.g_widths[k], cfg.g_levels, cfg.latent_dim, residual=k > 0,
                limit=cfg.residual_limit,
            )
            for k in range(cfg.n_stages)
        )
        self.to(memory_format=torch.channels_last_3d)

    @staticmethod
    def priors(k: int, heads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prior head, its detail over the upsampled coarser prior) at stage k from a prior pyramid."""
        if k == 0:
            return heads[0], heads[0]
        return heads[k], heads[k] - upsample(heads[k - 1], heads[k].shape[2:])

    def stage(
        self,
        k: int,
        cond: torch.Tensor,
        mask: torch.Tensor,
        noise: torch.Tensor,
        z: torch.Tensor,
        prev_up: torch.Tensor | None,
        prior: tuple[torch.Tensor, torch.Tensor],
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """Head at stage k's scale, composited with the condition: [N, 1, D, H, W].

        `prior` is `Generator.priors(k, ...)` cropped like the other inputs;
        `net` replaces `self.stages[k]` (e.g. the EMA copy's or a wrapped module) with the same composite.
        """
        n = cond.shape[0]
        assert_shape(cond, [n, 1, None, None, None])
        spatial = list(cond.shape[2:])
        assert_shape(mask, [n, 1, *spatial])
        assert_shape(noise, [n, self.cfg.noise_channels, *spatial])
        assert_shape(z, [n, self.cfg.latent_dim])
        prior_head, detail = prior
        assert_shape(prior_head, [n, 1, *spatial])
        assert_shape(detail, [n, 1, *spatial])
        parts = [cond, mask, noise, prior_head]
        if k > 0:
            assert prev_up is not None
            assert_shape(prev_up, [n, 1, *spatial])
            parts.append(prev_up)
            base = prev_up + detail
        else:
            base = prior_head
        head = (net or self.stages[k])(torch.cat(parts, dim=1), z, base)
        out = cond + (1.0 - mask) * head
        assert_shape(out, [n, 1, *spatial])
        return out

    def forward(
        self,
        conds: list[torch.Tensor],
        masks: list[torch.Tensor],
        noises: list[torch.Tensor],
        z: torch.Tensor,
        priors: list[torch.Tensor],
        until: int | None = None,
    ) -> list[torch.Tensor]:
        """Outputs of stages 0..until (whole volumes), each fed upsampled into the next."""
        last = self.cfg.n_stages - 1 if until is None else until
        outs: list[torch.Tensor] = []
        for k in range(last + 1):
            prev_up = None if k == 0 else upsample(outs[-1], conds[k].shape[2:])
            outs.append(self.stage(k, conds[k], masks[k], noises[k], z, prev_up, self.priors(k, priors)))
        return outs


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Cell-centred trilinear upsampling (the inverse partner of block averaging)."""
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)


class PatchDiscriminator(nn.Module):
    """Conditional patch discriminator on (condition, preserved fraction, head) -> (logits, features)."""

    def __init__(self, width: int, levels: int, in_channels: int = 3):
        super().__init__()
        layers = [ConvBlock(in_channels, width)]
        w = width
        for _ in range(levels):
            layers.append(ConvBlock(w, min(2 * w, 256), stride=2))
            w = min(2 * w, 256)
        self.layers = nn.ModuleList(layers)
        self.head = nn.Conv3d(w, 1, 3, padding=1)

    def forward(
        self, cond: torch.Tensor, mask: torch.Tensor, head: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n = head.shape[0]
        assert_shape(head, [n, 1, None, None, None])
        h = torch.cat([cond, mask, head], dim=1).contiguous(memory_format=torch.channels_last_3d)
        feats = []
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return self.head(h), feats


class Discriminators(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.per_stage = nn.ModuleList(
            PatchDiscriminator(cfg.d_widths[k], cfg.d_levels) for k in range(cfg.n_stages)
        )
        self.to(memory_format=torch.channels_last_3d)

    def forward(self, k: int, cond, mask, head):
        return self.per_stage[k](cond, mask, head)


def sample_latents(
    cfg: ModelConfig,
    n: int,
    spatial: list[tuple[int, int, int]],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(z [N, L], per-stage noise [N, C, *shape]) drawn on the CPU from `generator` (device-independent)."""
    z = torch.randn(n, cfg.latent_dim, generator=generator)
    noises = [torch.randn(n, cfg.noise_channels, *shape, generator=generator) for shape in spatial]
    return z.to(device), [x.to(device) for x in noises]
