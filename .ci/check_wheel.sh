#!/usr/bin/env bash
# The package as a user installs it: a wheel in a fresh virtual environment, used from an
# empty folder outside the clone (commands, configs by name, the Python API).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip wheel --quiet --no-deps -w "$work/wheel" "$repo"
python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "$(ls "$work"/wheel/*.whl)[cpu]"
mkdir "$work/empty" && cd "$work/empty"
export PADDLESEG_UNET_HOME="$work/home" OMP_NUM_THREADS=2
# Captured, not piped into grep -q: under pipefail, a reader that stops early fails the line.
configs=$("$work/venv/bin/paddleseg-unet" configs)
grep -q "unet/unet_drive_128x128_40k" <<<"$configs"
"$work/venv/bin/paddleseg-unet" train --config quickstart/unet_synthetic_vessels --iters 20 \
    --save_interval 20 --save_dir out
"$work/venv/bin/python" - <<'PY'
import glob
import os

from paddleseg_unet import Segmenter

seg = Segmenter.from_config("quickstart/unet_synthetic_vessels", weights="out/iter_20")
image = sorted(glob.glob(os.path.join(os.environ["PADDLESEG_UNET_HOME"], "datasets", "*",
                                      "images", "val", "*.png")))[0]
result = seg.predict(image)
assert result.label.shape == result.prob.shape[1:] and result.prob.shape[0] == 2, result
print(f"wheel check: Segmenter predicted {image} -> {result.label.shape}, classes "
      f"{result.class_names}")
PY
test ! -e "$work/empty/configs"  # the configs came from inside the package
echo "wheel check: OK"
