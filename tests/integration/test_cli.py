"""The command line, driven like a user: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import gzip
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from reface.cli import main


def _write(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "demo" in out


def _bad_inputs(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.nii.gz"
    _write(good, rng.random((20, 20, 20)).astype(np.float32))
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(good.read_bytes()[:300])
    nan = np.ones((20, 20, 20), np.float32)
    nan[3, 4, 5] = np.nan
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"hello"))
    return {
        "missing": tmp_path / "missing.nii.gz",
        "not-an-image": tmp_path / "text.nii.gz",
        "2d": _write(tmp_path / "flat.nii.gz", np.ones((30, 30), np.float32)),
        "4d": _write(tmp_path / "four.nii.gz", rng.random((20, 20, 20, 2)).astype(np.float32)),
        "all-zero": _write(tmp_path / "zero.nii.gz", np.zeros((20, 20, 20), np.float32)),
        "nan": _write(tmp_path / "nan.nii.gz", nan),
        "corrupt-gzip": corrupt,
    }


@pytest.mark.parametrize("case", ["missing", "not-an-image", "2d", "4d", "all-zero", "nan", "corrupt-gzip"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    source = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "result.nii.gz"
    qa = tmp_path / "out" / "qa.png"
    code = main(["run", str(source), "-o", str(out), "--method", "shear", "--qa", str(qa), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("reface run: error:") and "\n" not in err, err
    assert not out.exists() and not qa.exists()


def test_refuses_overwrite_and_unsafe_brain(tmp_path, capsys, phantom_file):
    head, mask, brain = phantom_file(shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2))
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    code = main(["run", str(head), "-o", str(out), "--method", "shear", "--brain-mask", str(mask), "--quiet"])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(brain.shape, np.uint8), nib.load(head).affine), empty)
    code = main(["run", str(head), "-o", str(tmp_path / "new.nii.gz"), "--method", "shear",
                 "--brain-mask", str(empty), "--quiet"])
    assert code == 2 and "no plausible brain" in capsys.readouterr().err
    assert not (tmp_path / "new.nii.gz").exists()


def test_run_writes_output_mask_and_qa(tmp_path, phantom_file):
    head, mask, brain = phantom_file(shape=(84, 100, 96), zooms=(2.2, 2.2, 2.2), axcodes="LPI")
    out, kept, qa = tmp_path / "o.nii.gz", tmp_path / "kept.nii.gz", tmp_path / "qa.png"
    code = main(["run", str(head), "-o", str(out), "--method", "shear", "--brain-mask", str(mask),
                 "--save-mask", str(kept), "--qa", str(qa), "--seed", "2", "--quiet"])
    assert code == 0
    src, dst = nib.load(head), nib.load(out)
    np.testing.assert_array_equal(src.affine, dst.affine)
    keep = np.asarray(nib.load(kept).dataobj) > 0
    assert keep[brain].all()
    np.testing.assert_array_equal(np.asarray(dst.dataobj)[keep], np.asarray(src.dataobj)[keep])
    assert qa.stat().st_size > 10_000 and qa.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_script_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reface.cli", "run", str(tmp_path / "nope.nii"), "-o",
                           str(tmp_path / "x.nii.gz"), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr
