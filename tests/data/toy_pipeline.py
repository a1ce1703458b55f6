"""A tiny stand-in for a user's downstream pipeline (tests of `reface evaluate --utility-cmd`).

usage: toy_pipeline.py json|labels|fail INPUT OUTPUT
- json: writes {"volume_ml": head volume above the mean intensity, "stats": {"mean": mean intensity}};
- labels: a label map, 1 above the mean intensity, 2 above twice the mean;
- fail: exits with status 3 after a message on stderr.
"""

import json
import sys

import nibabel as nib
import numpy as np

mode, src, dst = sys.argv[1:4]
if mode == "fail":
    print("toy pipeline: failing as asked", file=sys.stderr)
    sys.exit(3)
img = nib.load(src)
data = np.asanyarray(img.dataobj, dtype=np.float32)
mean = float(data.mean())
if mode == "json":
    volume_ml = float((data > mean).sum() * np.prod(img.header.get_zooms()[:3]) / 1000.0)
    with open(dst, "w") as fobj:
        json.dump({"volume_ml": volume_ml, "stats": {"mean": mean}, "tool": "toy"}, fobj)
else:
    labels = (data > mean).astype(np.uint8) + (data > 2 * mean).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, img.affine), dst)
