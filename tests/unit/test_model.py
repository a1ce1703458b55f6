"""The GAN on tiny grids (CPU, seconds): shapes, compositing, a training step, checkpoints, configs, data."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from reface.errors import RefaceError
from reface.model.checkpoint import load_generator, read_meta, save_generator
from reface.model.config import ModelConfig, preset, to_dict, train_from_dict
from reface.model.data import Batch, crop, discover, patch_corners, pyramid
from reface.model.networks import Discriminators, Generator, sample_latents
from reface.model.train import Trainer

SMALL = ModelConfig(
    scales_mm=(8, 4, 2), g_widths=(4, 4, 4), d_widths=(4, 4, 4), latent_dim=4, work_shape=(32, 48, 40)
)


def small_train_cfg(**overrides):
    base = preset("tiny")
    cfg = replace(
        base,
        model=SMALL,
        batch_size=2,
        patch_vox=(0, 8, 8),
        steps=(1, 1, 1),
        time_budget_min=(0.0, 0.0, 0.0),
        lr_g=1e-3,
        lr_d=1e-3,
    )
    return replace(cfg, **overrides)


def ball_batch(cfg: ModelConfig, n: int = 2, seed: int = 0) -> Batch:
    """Heads (bright shell) around brains (ball) on cfg's working grid, as a pyramid batch."""
    rng = np.random.default_rng(seed)
    shape = np.array(cfg.work_shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1) - (shape - 1) / 2
    fields = {name: [[] for _ in cfg.scales_mm] for name in ("img", "cond", "mask", "prior")}
    for _ in range(n):
        r = np.linalg.norm(grid / (shape / 2 * rng.uniform(0.8, 0.95)), axis=-1)
        vol = np.where(r < 0.55, 1.0, np.where(r < 1.0, 0.6, 0.0)).astype(np.float32)
        vol += 0.02 * rng.standard_normal(vol.shape).astype(np.float32)
        prior = np.where(r < 0.6, 0.9, np.where(r < 1.05, 0.5, 0.0)).astype(np.float32)  # a blurrier head
        levels = pyramid(vol, r < 0.6, cfg.scales_mm, prior)
        for name, per_scale in fields.items():
            for i, s in enumerate(cfg.scales_mm):
                per_scale[i].append(levels[s][name])

    return Batch(**{name: [torch.from_numpy(np.stack(a))[:, None] for a in arrays] for name, arrays in fields.items()})


def test_generator_shapes_per_stage():
    torch.manual_seed(0)
    gen = Generator(SMALL)
    batch = ball_batch(SMALL)
    shapes = [SMALL.shape_at(s) for s in SMALL.scales_mm]
    assert shapes == [(4, 6, 5), (8, 12, 10), (16, 24, 20)]
    z, noises = sample_latents(SMALL, 2, shapes, torch.Generator().manual_seed(0))
    outs = gen(batch.cond, batch.mask, noises, z, batch.prior)
    assert [tuple(o.shape) for o in outs] == [(2, 1, *s) for s in shapes]
    logits, feats = Discriminators(SMALL)(2, batch.cond[2], batch.mask[2], outs[2])
    assert logits.shape[:2] == (2, 1) and len(feats) == SMALL.d_levels + 1
    with pytest.raises(AssertionError):  # wrong noise channels are caught at the boundary
        gen.stage(0, batch.cond[0], batch.mask[0], noises[0][:, :1], z, None, Generator.priors(0, batch.prior))


def test_stage_output_equals_condition_inside_preserved_region():
    torch.manual_seed(1)
    gen = Generator(SMALL)
    batch = ball_batch(SMALL)
    shapes = [SMALL.shape_at(s) for s in SMALL.scales_mm]
    z, noises = sample_latents(SMALL, 2, shapes, torch.Generator().manual_seed(3))
    out = gen(batch.cond, batch.mask, noises, z, batch.prior)[-1]
    inside = batch.mask[-1] == 1.0
    assert inside.any() and (~inside).any()
    assert torch.equal(out[inside], batch.cond[-1][inside])


def test_finer_stage_starts_as_identity_on_coarse_head_plus_prior_detail():
    gen = Generator(SMALL)
    batch = ball_batch(SMALL)
    prev = torch.rand_like(batch.cond[1])
    z, noises = sample_latents(SMALL, 2, [SMALL.shape_at(4)], torch.Generator().manual_seed(0))
    prior, detail = Generator.priors(1, batch.prior)
    assert detail.abs().max() > 0.01  # the prior has detail at 4 mm that the 8 mm level lacks
    out = gen.stage(1, batch.cond[1], batch.mask[1], noises[0], z, prev, (prior, detail))
    expected = batch.cond[1] + (1 - batch.mask[1]) * (prev + detail)
    assert torch.allclose(out, expected, atol=1e-6)


def test_coarse_stage_is_residual_over_the_prior():
    """An untrained coarse stage stays close to the prior head: the prior carries the anatomy."""
    torch.manual_seed(0)
    gen = Generator(SMALL)
    batch = ball_batch(SMALL)
    z, noises = sample_latents(SMALL, 2, [SMALL.shape_at(8)], torch.Generator().manual_seed(0))
    out = gen.stage(0, batch.cond[0], batch.mask[0], noises[0], z, None, Generator.priors(0, batch.prior))
    outside = batch.mask[0] < 1
    far_from_prior = (out - batch.prior[0])[outside].abs().mean()
    assert far_from_prior < 0.1 * batch.prior[0][outside].abs().mean()


@pytest.mark.parametrize("stage", [0, 2])
def test_one_training_step_lowers_the_losses(stage):
    torch.manual_seed(0)
    cfg = small_train_cfg()
    trainer = Trainer(cfg, torch.device("cpu"))
    trainer.begin_stage(stage)
    batch = ball_batch(SMALL)
    x = trainer.inputs(batch, np.random.default_rng(0), torch.Generator().manual_seed(0))
    if cfg.patch_vox[stage]:
        assert x.img.shape[2:] == (8, 8, 8)
    d_before, _ = trainer.d_loss(x)
    trainer.d_step(x)
    d_after, _ = trainer.d_loss(x)
    assert d_after.item() < d_before.item()
    g_before, _ = trainer.g_loss(x)
    ema_before = [p.clone() for p in trainer.G_ema.stages[stage].parameters()]
    trainer.g_step(x)
    g_after, _ = trainer.g_loss(x)
    assert g_after.item() < g_before.item()
    moved = any(
        not torch.equal(a, b)
        for a, b in zip(ema_before, trainer.G_ema.stages[stage].parameters(), strict=True)
    )
    assert moved, "the EMA generator must follow the trained stage"


def test_r1_penalty_is_positive_and_frozen_stages_do_not_move():
    torch.manual_seed(0)
    trainer = Trainer(small_train_cfg(), torch.device("cpu"))
    trainer.begin_stage(1)
    frozen = [p.clone() for p in trainer.G.stages[0].parameters()]
    x = trainer.inputs(ball_batch(SMALL), np.random.default_rng(0), torch.Generator().manual_seed(0))
    logs = trainer.d_step(x, r1=True)
    logs.update(trainer.g_step(x))
    assert logs["r1"] > 0
    assert all(torch.equal(a, b) for a, b in zip(frozen, trainer.G.stages[0].parameters(), strict=True))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    gen = Generator(SMALL)
    path = save_generator(gen, tmp_path / "m.safetensors", data="unit test", steps=[1, 2, 3])
    assert json.loads(path.with_suffix(".json").read_text())["data"] == "unit test"
    loaded, meta = load_generator(path)
    assert meta["steps"] == [1, 2, 3] and loaded.cfg == SMALL
    batch = ball_batch(SMALL)
    shapes = [SMALL.shape_at(s) for s in SMALL.scales_mm]
    z, noises = sample_latents(SMALL, 2, shapes, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(
            gen(batch.cond, batch.mask, noises, z, batch.prior)[-1],
            loaded(batch.cond, batch.mask, noises, z, batch.prior)[-1],
        )


def test_corrupt_foreign_and_mismatched_checkpoints_are_reface_errors(tmp_path):
    from safetensors.torch import save_file

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 10)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    good = save_generator(Generator(SMALL), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    mismatched = tmp_path / "mismatched.safetensors"
    tensors = {
        k: v.contiguous() for k, v in Generator(replace(SMALL, g_widths=(8, 4, 4))).state_dict().items()
    }
    save_file(tensors, str(mismatched), metadata={"reface": json.dumps(read_meta(good))})
    for bad in (garbage, foreign, truncated, mismatched, tmp_path / "missing.safetensors"):
        with pytest.raises(RefaceError):
            load_generator(bad)


def test_config_json_round_trip_and_presets():
    for name in ("tiny", "base", "large"):
        cfg = preset(name)
        assert train_from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg
    assert preset("base").model.scales_mm[-1] == 1  # GPU presets include the 1 mm stage
    with pytest.raises(RefaceError):
        preset("huge")
    with pytest.raises(RefaceError):
        ModelConfig(scales_mm=(4, 3), g_widths=(4, 4), d_widths=(4, 4))


def test_train_cli_dry_run_prints_resolved_config(capsys):
    from reface.cli import main

    assert main(["train", "--out", "unused", "--config", "tiny", "--steps", "7", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == [7, 7, 7] and printed["model"]["scales_mm"] == [8, 4, 2]


def test_train_cli_without_data_exits_2(tmp_path, capsys):
    from reface.cli import main

    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "no training data" in capsys.readouterr().err


def test_pyramid_is_block_average_and_mask_is_fraction():
    rng = np.random.default_rng(0)
    vol = rng.random((8, 8, 8)).astype(np.float32)
    pres = np.zeros((8, 8, 8), bool)
    pres[:3] = True
    levels = pyramid(vol, pres, (4, 2, 1), 2 * vol)
    assert levels[4]["img"].shape == (2, 2, 2)
    assert np.isclose(levels[4]["img"][0, 0, 0], vol[:4, :4, :4].mean())
    assert np.isclose(levels[2]["mask"][1, 0, 0], 0.5)  # x 2..3: one of two slices preserved
    assert np.isclose(levels[2]["cond"][1, 0, 0], (vol[2:4, :2, :2] * pres[2:4, :2, :2]).mean())
    assert np.array_equal(levels[1]["cond"], vol * pres)
    assert np.allclose(levels[4]["prior"], 2 * levels[4]["img"])


def test_patches_are_centred_outside_the_brain():
    mask = torch.zeros(1, 1, 16, 16, 16)
    mask[..., :8, :, :] = 1.0
    img = torch.ones_like(mask)
    corners = patch_corners(mask, img, 4, np.random.default_rng(0))
    assert corners[0][0] >= 8 - 2  # centre in the non-brain half
    assert crop(img, corners, 4).shape == (1, 1, 4, 4, 4)


def test_discover_bids_tree_and_flat_folder(tmp_path):
    anat = tmp_path / "bids" / "sub-01" / "ses-01" / "anat"
    anat.mkdir(parents=True)
    t1 = anat / "sub-01_ses-01_T1w.nii.gz"
    mask = anat / "sub-01_ses-01_desc-brain_mask.nii.gz"
    t1.touch()
    mask.touch()
    assert discover(tmp_path / "bids") == [(t1, mask)]
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.nii").touch()
    (flat / "b_mask.nii.gz").touch()
    assert discover(flat) == [(flat / "a.nii", None)]
    with pytest.raises(RefaceError):
        discover(tmp_path / "nowhere")


def test_tiled_stage_matches_whole_volume_inside_and_covers_everything(monkeypatch):
    from reface.model import inference

    monkeypatch.setattr(inference, "TILE_VOX", 12)
    monkeypatch.setattr(inference, "TILE_OVERLAP_VOX", 4)
    torch.manual_seed(0)
    gen = Generator(SMALL).eval()
    batch = ball_batch(SMALL, n=1)
    shapes = [SMALL.shape_at(s) for s in SMALL.scales_mm]
    z, noises = sample_latents(SMALL, 1, shapes, torch.Generator().manual_seed(0))
    prev = torch.rand_like(batch.cond[2])
    with torch.no_grad():
        tiled = inference._stage_tiled(gen, 2, batch.cond[2], batch.mask[2], noises[2], z, prev, batch.prior)
        whole = gen.stage(2, batch.cond[2], batch.mask[2], noises[2], z, prev, Generator.priors(2, batch.prior))
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    # a fresh finer stage is the identity on its base, so tiling must reproduce it exactly (up to rounding)
    assert torch.allclose(tiled, whole, atol=1e-5)


@pytest.mark.slow
def test_train_function_end_to_end_and_resume(tmp_path):
    """train(cfg, run_dir) on one augmented packaged head: run folder, checkpoint, resume (about a minute)."""
    from reface.model.train import train

    model = ModelConfig(g_widths=(4, 4, 4), d_widths=(4, 4, 4), latent_dim=4)
    cfg = replace(preset("tiny"), model=model, packaged=1, steps=(1, 1, 1), batch_size=1, sample_every=1)
    out = train(cfg, tmp_path / "run", quiet=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["packaged"] == 1
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "run" / "samples").glob("*_final.png")) == [
        "stage0_final.png",
        "stage1_final.png",
        "stage2_final.png",
    ]
    generator, meta = load_generator(out)
    assert meta["steps"] == [1, 1, 1] and not any(k.startswith("prior") for k in generator.state_dict())
    with pytest.raises(RefaceError):  # a second run into the same folder needs --resume
        train(cfg, tmp_path / "run", quiet=True)
    out = train(replace(cfg, steps=(1, 1, 2)), tmp_path / "run", resume=True, quiet=True)
    assert load_generator(out)[1]["steps"] == [1, 1, 2]


def test_stage_change_is_bounded_by_the_residual_limit():
    """However the weights drift, a stage moves its base by less than residual_limit (no blow-up)."""
    torch.manual_seed(0)
    gen = Generator(SMALL)
    with torch.no_grad():
        gen.stages[0].out.weight.mul_(1e4)
        gen.stages[0].out.bias.fill_(50.0)
    batch = ball_batch(SMALL)
    z, noises = sample_latents(SMALL, 2, [SMALL.shape_at(8)], torch.Generator().manual_seed(0))
    out = gen.stage(0, batch.cond[0], batch.mask[0], noises[0], z, None, Generator.priors(0, batch.prior))
    outside = batch.mask[0] == 0
    change = (out - batch.prior[0])[outside]
    assert change.abs().max() <= SMALL.residual_limit + 1e-6
    assert change.abs().max() > 0.9 * SMALL.residual_limit  # the bound is reached, not a no-op
