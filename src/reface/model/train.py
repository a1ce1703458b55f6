"""Training: `train(cfg, run_dir)`, a plain function behind `reface train`, the same under torchrun.

Stages are trained coarse to fine (SinGAN-style): while stage k trains, stages < k are frozen and their
EMA weights produce the coarse head that stage k refines, exactly as at inference. Each step: one
discriminator step (logistic loss, lazy R1 on reals) and one generator step (non-saturating loss plus
feature-statistics matching). Finer stages train on patches centred on head voxels outside the brain.

DDP follows nanoGPT: `RANK` in the environment means distributed; the master process alone writes;
seeds are offset by rank; gradients are averaged by hand (all_reduce), which keeps R1's double
backward simple.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import RefaceError
from .checkpoint import load_state, save_generator, save_state
from .config import TrainConfig, to_dict, write_json
from .data import Batch, VolumeSet, crop, patch_corners, prepare_cache
from .losses import d_logistic, feature_statistics_matching, g_nonsaturating, r1_penalty
from .networks import Discriminators, Generator, sample_latents, upsample


@dataclass
class StageInputs:
    """What one stage's step sees, all [N, C, D, H, W] (patches for patch stages)."""

    cond: torch.Tensor
    mask: torch.Tensor
    img: torch.Tensor
    noise: torch.Tensor
    z: torch.Tensor
    prev_up: torch.Tensor | None
    prior: tuple[torch.Tensor, torch.Tensor]  # the scan's fitted prior head and its detail at this scale


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> Dist:
    if int(os.environ.get("RANK", -1)) == -1:
        return Dist()
    import torch.distributed as dist

    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    info = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))
    if device == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RefaceError("--device cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise RefaceError(f"unknown device {name!r} (cpu or cuda)")
    return torch.device("cpu")


class Trainer:
    """Networks, optimisers and the two update steps for one stage at a time."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dist: Dist | None = None):
        self.cfg, self.device, self.dist = cfg, device, dist or Dist()
        self.G = Generator(cfg.model).to(device)
        self.D = Discriminators(cfg.model).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.stage = -1
        self.opt_g = self.opt_d = None

    def begin_stage(self, k: int) -> None:
        """Freeze everything but stage k of G and D; fresh Adam for the stage."""
        self.stage = k
        self.G.requires_grad_(False)
        self.D.requires_grad_(False)
        self.G.stages[k].requires_grad_(True)
        self.D.per_stage[k].requires_grad_(True)
        betas = (self.cfg.beta1, self.cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.stages[k].parameters(), lr=self.cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.per_stage[k].parameters(), lr=self.cfg.lr_d, betas=betas)

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def inputs(self, batch: Batch, rng: np.random.Generator, gen: torch.Generator) -> StageInputs:
        """Stage inputs from a batch: coarse head from the frozen EMA stages, then a patch crop."""
        k, cfg = self.stage, self.cfg
        n = batch.img[0].shape[0]
        z, noises = sample_latents(
            cfg.model, n, [tuple(c.shape[2:]) for c in batch.cond[: k + 1]], gen, self.device
        )
        prev_up = None
        if k > 0:
            with self._autocast():
                outs = self.G_ema(batch.cond[:k], batch.mask[:k], noises[:k], z, batch.prior[:k], until=k - 1)
                coarse = outs[-1]
            prev_up = upsample(coarse.float(), batch.cond[k].shape[2:])
        cond, mask, img, noise = batch.cond[k], batch.mask[k], batch.img[k], noises[k]
        prior = Generator.priors(k, batch.prior)
        size = cfg.patch_vox[k]
        if size:
            corners = patch_corners(mask, img, size, rng)
            cond, mask, img, noise = (crop(x, corners, size) for x in (cond, mask, img, noise))
            prev_up = crop(prev_up, corners, size) if prev_up is not None else None
            prior = tuple(crop(p, corners, size) for p in prior)
        return StageInputs(cond, mask, img, noise, z, prev_up, prior)

    def fake(self, x: StageInputs) -> torch.Tensor:
        return self.G.stage(self.stage, x.cond, x.mask, x.noise, x.z, x.prev_up, x.prior)

    def d_loss(self, x: StageInputs) -> tuple[torch.Tensor, dict]:
        k = self.stage
        with self._autocast():
            fake = self.fake(x).detach()
            real_logits, _ = self.D(k, x.cond, x.mask, x.img)
            fake_logits, _ = self.D(k, x.cond, x.mask, fake)
            loss = d_logistic(real_logits.float(), fake_logits.float())
        return loss, {
            "loss_d": float(loss.detach()),
            "real_score": float(real_logits.detach().mean()),
            "fake_score": float(fake_logits.detach().mean()),
        }

    def g_loss(self, x: StageInputs) -> tuple[torch.Tensor, dict]:
        k = self.stage
        with self._autocast():
            fake = self.fake(x)
            fake_logits, fake_feats = self.D(k, x.cond, x.mask, fake)
            with torch.no_grad():
                _, real_feats = self.D(k, x.cond, x.mask, x.img)
            adv = g_nonsaturating(fake_logits.float())
            fm = feature_statistics_matching(real_feats, fake_feats)
            loss = adv + self.cfg.fm_weight * fm
        return loss, {"loss_g": float(adv.detach()), "fm": float(fm.detach())}

    def _reduce(self, params) -> None:
        if not self.dist.enabled:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.dist.world

    def d_step(self, x: StageInputs, *, r1: bool = False) -> dict:
        k = self.stage
        self.opt_d.zero_grad(set_to_none=True)
        loss, logs = self.d_loss(x)
        if r1 and self.cfg.r1_gamma > 0:
            real = x.img.detach().requires_grad_(True)
            real_logits, _ = self.D(k, x.cond, x.mask, real)  # fp32 for the double backward
            penalty = r1_penalty(real_logits, real)
            loss = loss + self.cfg.r1_gamma * self.cfg.r1_every * penalty
            logs["r1"] = float(penalty.detach())
        loss.backward()
        self._reduce(self.D.per_stage[self.stage].parameters())
        self.opt_d.step()
        return logs

    def g_step(self, x: StageInputs) -> dict:
        self.opt_g.zero_grad(set_to_none=True)
        loss, logs = self.g_loss(x)
        loss.backward()
        self._reduce(self.G.stages[self.stage].parameters())
        self.opt_g.step()
        self.update_ema()
        return logs

    @torch.no_grad()
    def update_ema(self) -> None:
        beta = 0.5 ** (1.0 / max(self.cfg.ema_half_life_steps, 1e-8))
        src, dst = self.G.stages[self.stage], self.G_ema.stages[self.stage]
        for p, q in zip(src.parameters(), dst.parameters(), strict=True):
            q.lerp_(p, 1.0 - beta)

    def state(self, stage: int, step: int) -> dict:
        return {
            "stage": stage,
            "step": step,
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])


def _sample_png(trainer: Trainer, batch: Batch, path: Path, gen: torch.Generator) -> None:
    """Mid slices (sagittal, coronal, axial) of real heads and two generated heads each, at stage scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, cfg = trainer.stage, trainer.cfg.model
    n = min(2, batch.img[0].shape[0])
    shapes = [tuple(c.shape[2:]) for c in batch.cond[: k + 1]]
    rows = []
    with torch.no_grad():
        fakes = []
        for _ in range(2):
            z, noises = sample_latents(cfg, n, shapes, gen, trainer.device)
            out = trainer.G_ema(
                [c[:n] for c in batch.cond], [m[:n] for m in batch.mask], noises, z, [p[:n] for p in batch.prior],
                until=k,
            )[-1]
            fakes.append(out.float().cpu().numpy()[:, 0])
    real = batch.img[k][:n].float().cpu().numpy()[:, 0]
    for i in range(n):
        for vol in (real[i], fakes[0][i], fakes[1][i]):
            x, y, zc = (s // 2 for s in vol.shape)
            views = [np.rot90(vol[x]), np.rot90(vol[:, y]), np.rot90(vol[:, :, zc])]
            height = max(v.shape[0] for v in views)
            views = [np.pad(v, ((0, height - v.shape[0]), (0, 2))) for v in views]
            rows.append(np.concatenate(views, axis=1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 2), (0, width - r.shape[1]))) for r in rows], axis=0)
    plt.imsave(path, np.clip(sheet, 0, 1.5), cmap="gray", vmin=0, vmax=1.5)


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, quiet: bool = False) -> Path:
    """Train all stages; export the EMA generator to RUN_DIR/model.safetensors (+ .json) and return it."""
    dist = setup_distributed(cfg.device)
    device = resolve_device(cfg.device, dist.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    run_dir = Path(run_dir)
    state_path = run_dir / "state.pt"
    if dist.master:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        if not resume and state_path.exists():
            raise RefaceError(f"{run_dir} already holds a training run; use --resume or another --out")
        write_json(to_dict(cfg), run_dir / "config.json")
    scales = cfg.model.scales_mm
    cache = Path(cfg.cache) if cfg.cache else run_dir / "cache"
    if dist.master:
        paths = prepare_cache(scales, cache, data=cfg.data, packaged=cfg.packaged, seed=cfg.seed, quiet=quiet)
    if dist.enabled:
        torch.distributed.barrier()
    if not dist.master:
        paths = prepare_cache(scales, cache, data=cfg.data, packaged=cfg.packaged, seed=cfg.seed, quiet=True)
    data = VolumeSet(paths, scales)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (gradients are averaged by hand)
    trainer = Trainer(cfg, device, dist)
    torch.manual_seed(cfg.seed + dist.rank)
    start_stage, start_step, done_steps = 0, 0, [0] * cfg.model.n_stages
    if resume and state_path.exists():
        state = load_state(state_path)
        trainer.load(state)
        start_stage, start_step = int(state["stage"]), int(state["step"])
        done_steps = [int(s) for s in state.get("done_steps", done_steps)]
    log_path = run_dir / "log.jsonl"
    t_start = time.time()
    for k in range(start_stage, cfg.model.n_stages):
        trainer.begin_stage(k)
        step = start_step if k == start_stage else 0
        if resume and k == start_stage and step > 0:
            trainer.opt_g.load_state_dict(state["opt_g"])
            trainer.opt_d.load_state_dict(state["opt_d"])
        rng = np.random.default_rng([cfg.seed, dist.rank, k, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        sample_gen_seed = cfg.seed + 12345
        t_stage = time.time()
        bar = _bar(cfg.steps[k], step, f"stage {k} ({scales[k]} mm)", quiet or not dist.master)
        batch = None
        while step < cfg.steps[k]:
            if _out_of_time(cfg.time_budget_min[k], t_stage, dist, device):
                break
            batch = data.batch(cfg.batch_size, rng, flip=cfg.flip_lr, device=device, upto=k)
            x = trainer.inputs(batch, rng, gen)
            logs = trainer.d_step(x, r1=step % cfg.r1_every == 0)
            logs.update(trainer.g_step(x))
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(d=f"{logs['loss_d']:.3f}", g=f"{logs['loss_g']:.3f}")
            if not dist.master:
                continue
            if step % cfg.log_every == 0 or step == 1:
                record = {
                    "stage": k,
                    "scale_mm": scales[k],
                    "step": step,
                    "time_s": round(time.time() - t_start, 1),
                    **{key: round(v, 5) for key, v in logs.items()},
                }
                with log_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            if step % cfg.sample_every == 0:
                _sample_png(
                    trainer,
                    batch,
                    run_dir / "samples" / f"stage{k}_step{step:06d}.png",
                    torch.Generator().manual_seed(sample_gen_seed),
                )
            if step % cfg.checkpoint_every == 0:
                save_state({**trainer.state(k, step), "done_steps": done_steps}, state_path)
        if bar is not None:
            bar.close()
        done_steps[k] = step
        if dist.master and batch is not None:
            _sample_png(
                trainer,
                batch,
                run_dir / "samples" / f"stage{k}_final.png",
                torch.Generator().manual_seed(sample_gen_seed),
            )
            # the next stage starts from step 0: the saved state points there
            save_state(
                {
                    **trainer.state(
                        k + 1 if k + 1 < cfg.model.n_stages else k, 0 if k + 1 < cfg.model.n_stages else step
                    ),
                    "done_steps": done_steps,
                },
                state_path,
            )
    out = run_dir / "model.safetensors"
    if dist.master:
        data_desc = cfg.data or f"{cfg.packaged} augmented packaged heads (ROBEX atlas, analytic phantoms)"
        if cfg.data and cfg.packaged:
            data_desc += f" + {cfg.packaged} augmented packaged heads"
        save_generator(
            trainer.G_ema,
            out,
            preset=cfg.preset,
            data=data_desc,
            n_scans=len(data),
            steps=done_steps,
            train_minutes=round((time.time() - t_start) / 60.0, 1),
            batch_size=cfg.batch_size,
            world_size=dist.world,
            seed=cfg.seed,
        )
    if dist.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out


def _out_of_time(budget_min: float, t_stage: float, dist: Dist, device: torch.device) -> bool:
    """Stage time budget; under DDP rank 0 decides for all, so no rank waits in an all_reduce alone."""
    late = bool(budget_min) and time.time() - t_stage > 60.0 * budget_min
    if not dist.enabled:
        return late
    flag = torch.tensor([1.0 if late else 0.0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _bar(total: int, initial: int, desc: str, disabled: bool):
    if disabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True)
