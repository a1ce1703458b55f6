"""GAN losses. Deliberately no voxel-wise or per-subject reconstruction term outside the brain.

- non-saturating logistic loss (StyleGAN2) for both players;
- lazy R1 penalty on real samples (keeps the discriminator smooth, no batch statistics needed);
- feature matching on *batch statistics* of discriminator features (per-channel mean and std over the
  batch and space, Salimans et al. 2016), which steadies training without pulling a fake towards the
  paired real subject's own face (pix2pixHD's per-sample matching would leak identity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """0.5 * E ||d D(x) / d x||^2 on reals; `real_input` must require grad."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_input, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def _stats(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = feat.float().transpose(0, 1).flatten(1)  # [C, N*D*H*W]
    return flat.mean(1), flat.std(1)


def feature_statistics_matching(
    real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]
) -> torch.Tensor:
    """L1 between per-channel batch statistics of real and fake discriminator features."""
    loss = torch.zeros((), device=fake_feats[0].device)
    for real, fake in zip(real_feats, fake_feats, strict=True):
        rm, rs = _stats(real.detach())
        fm, fs = _stats(fake)
        loss = loss + (rm - fm).abs().mean() + (rs - fs).abs().mean()
    return loss / len(fake_feats)
