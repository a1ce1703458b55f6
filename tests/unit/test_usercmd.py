"""`--utility-cmd`: a user pipeline run on the original and the de-identified scan, with a tiny script
pipeline (tests/data/toy_pipeline.py) that writes a JSON of numbers or a thresholded label map."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from reface.evaluate import usercmd

TOY = Path(__file__).resolve().parents[1] / "data" / "toy_pipeline.py"


def _command(kind: str, name: str = "toy", mode: str | None = None) -> usercmd.UserCommand:
    mode = mode or ("json" if kind == "json" else "labels")
    return usercmd.parse(f"{name}:{kind}={sys.executable} '{TOY}' {mode} {{input}} {{output}}", timeout_s=60)


@pytest.fixture
def scans(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 100, (12, 12, 12)).astype(np.float32)
    data[4:8, 4:8, 4:8] = 300.0
    original, changed = tmp_path / "in put.nii.gz", tmp_path / "deid.nii.gz"  # a space stays one argument
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), original)
    edited = data.copy()
    edited[:, :, :2] = 0.0
    nib.save(nib.Nifti1Image(edited, np.diag([2.0, 2.0, 2.0, 1.0])), changed)
    return original, changed


def test_parse():
    cmd = usercmd.parse("age=synthba --input {input} --output {output}")
    assert (cmd.name, cmd.suffix, cmd.pipeline) == ("age", ".json", "cmd:age")
    assert usercmd.parse("seg:nii.gz=mri_synthseg --i {input} --o {output}").suffix == ".nii.gz"
    assert usercmd.parse("python age.py {input} {output}").name == "python"
    assert usercmd.argv(cmd, Path("/a b/in.nii"), Path("/o.json")) == [
        "synthba", "--input", "/a b/in.nii", "--output", "/o.json"]
    for bad in ("age=synthba {input}", "age:csv=x {input} {output}", "x 'unclosed {input} {output}", ""):
        with pytest.raises(ValueError):
            usercmd.parse(bad)


def test_json_numbers_compared(scans):
    original, changed = scans
    cmd = _command("json")
    ref = usercmd.run_command(cmd, original)
    assert not ref.failed and set(ref.numbers) == {"volume_ml", "stats.mean"}  # strings are ignored
    same = usercmd.compare(ref, usercmd.run_command(cmd, original))
    assert same["absdiff_volume_ml"] == 0.0 and same["failed"] == 0.0
    values = usercmd.compare(ref, usercmd.run_command(cmd, changed))
    mean_before = ref.numbers["stats.mean"]
    after = json.loads(json.dumps(values))  # plain floats
    assert after["absdiff_stats.mean"] > 0
    assert after["reldiff_stats.mean"] == pytest.approx(after["absdiff_stats.mean"] / mean_before)


def test_label_maps_compared(scans, tmp_path: Path):
    original, changed = scans
    cmd = _command("nii.gz")
    ref = usercmd.run_command(cmd, original)
    assert ref.labels is not None and ref.voxel_ml == pytest.approx(0.008)
    assert usercmd.compare(ref, ref)["dice_2"] == 1.0
    new = usercmd.run_command(cmd, changed)
    values = usercmd.compare(ref, new)
    assert values["dice_2"] == 1.0  # the bright cube is untouched
    n_ref, n_new = int((ref.labels == 1).sum()), int((new.labels == 1).sum())
    assert values["dice_1"] < 1.0 and values["dvol_ml_1"] == pytest.approx((n_new - n_ref) * 0.008)
    assert values["rvd_1"] == pytest.approx(n_new / n_ref - 1)
    assert 0 < values["mean_dice"] < 1
    usercmd.save_output(tmp_path / "c.npz", ref)
    back = usercmd.load_output(tmp_path / "c.npz")
    assert np.array_equal(back.labels, ref.labels) and back.voxel_ml == ref.voxel_ml and back.failed == ""


def test_failures_are_recorded_not_raised(scans):
    original, _ = scans
    ok = usercmd.run_command(_command("json"), original)
    failed = usercmd.run_command(_command("json", mode="fail"), original)
    assert failed.failed.startswith("exit status 3") and "failing as asked" in failed.failed
    assert usercmd.compare(ok, failed) == {"original_failed": 0.0, "failed": 1.0}
    assert usercmd.compare(failed, ok) == {"original_failed": 1.0}
    missing = usercmd.parse("nope=reface-no-such-program {input} {output}")
    assert "FileNotFoundError" in usercmd.run_command(missing, original).failed
    silent = usercmd.parse(f"quiet={sys.executable} -c pass {{input}} {{output}}")
    assert usercmd.run_command(silent, original).failed == "wrote no output.json"
    slow = usercmd.parse(f"slow={sys.executable} -c 'import time; time.sleep(30)' {{input}} {{output}}", timeout_s=1)
    assert "longer than" in usercmd.run_command(slow, original).failed
