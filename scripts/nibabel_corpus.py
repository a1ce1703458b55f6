"""`reface run` on every image file of the test corpus inside the installed nibabel (nibabel/tests/data).

A corpus written by other people for other bugs: every file must end in exit 0 (output on the input's
grid) or exit 2 (one line on stderr, nothing written), never a traceback. Runs in-process through
reface.cli.main, as `reface run FILE -o OUT --method shear` would; used by
tests/integration/test_nibabel_corpus.py and, for the table in the docs:

    python scripts/nibabel_corpus.py --markdown docs/nibabel_corpus.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

# Not images: streamlines, scripts, docs; partner files (.REC, .BRIK, .img) are reached through their header.
SKIP_SUFFIXES = (".py", ".m", ".rst", ".trk", ".tck", ".rec", ".brik", ".brik.gz", ".img", ".img.gz", ".pyc")


@dataclass
class Outcome:
    name: str
    code: int
    message: str  # stderr's one line on exit 2, else the warnings (or "")
    on_grid: bool | None  # exit 0: does the output have the input's shape and affine
    written: list[str]  # files left in the output folder
    seconds: float


def corpus_dir() -> Path:
    return Path(nib.__file__).parent / "tests" / "data"


def corpus_files(folder: Path | None = None) -> list[Path]:
    """Every image file in the corpus, sorted by name (case-insensitively)."""
    folder = folder or corpus_dir()
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and not p.name.lower().endswith(SKIP_SUFFIXES)]
    return sorted(files, key=lambda p: p.name.lower())


def run_one(path: Path, out_dir: Path, method: str = "shear") -> Outcome:
    """One `reface run` in-process; the output folder is empty before and inspected after."""
    from reface.cli import main

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / "out.nii.gz"
    stderr, stdout = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            code = main(["run", str(path), "-o", str(output), "--method", method, "--quiet"])
        except Exception as error:  # what a user would see as a traceback and exit code 1
            code = 1
            print(f"TRACEBACK {type(error).__name__}: {error}", file=stderr)
    seconds = time.perf_counter() - start
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    on_grid = None
    if code == 0:
        from reface.io import load_scan

        scan = load_scan(path)
        out = nib.load(str(output))
        on_grid = tuple(out.shape) == tuple(scan.disk_shape) and bool(np.allclose(out.affine, scan.affine,
                                                                                 atol=1e-4))
    message = " / ".join(lines)
    return Outcome(path.name, code, message, on_grid, sorted(p.name for p in out_dir.iterdir()), seconds)


def run_all(out_root: Path, method: str = "shear") -> list[Outcome]:
    return [run_one(path, out_root / path.name, method) for path in corpus_files()]


def markdown(outcomes: list[Outcome]) -> str:
    rows = ["| file | exit | on grid | message |", "|---|---|---|---|"]
    for o in outcomes:
        grid = "" if o.on_grid is None else ("yes" if o.on_grid else "NO")
        message = o.message.replace(f"{corpus_dir()}/", "").replace("|", "\\|")
        rows.append(f"| `{o.name}` | {o.code} | {grid} | {message} |")
    processed = sum(o.code == 0 for o in outcomes)
    refused = sum(o.code == 2 for o in outcomes)
    head = (f"{len(outcomes)} image files in nibabel {nib.__version__}'s tests/data: {processed} processed, "
            f"{refused} refused with one line, {len(outcomes) - processed - refused} other.\n\n")
    return head + "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="shear")
    parser.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = run_all(Path(tmp), args.method)
    text = markdown(outcomes)
    print(text)
    if args.markdown:
        command = f"python scripts/nibabel_corpus.py --method {args.method} --markdown {args.markdown}"
        Path(args.markdown).write_text(f"# nibabel's test corpus through `reface run`\n\n`{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
