"""The package builds as a wheel, and that wheel installs into a fresh virtual environment and
works there (outside the repository, without the development install)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[1]

USE = r"""
import sys, numpy as np, imgvec
assert "site-packages" in imgvec.__file__, imgvec.__file__
with imgvec.Database(sys.argv[1], pipeline="fast") as db:
    img = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    new = db.insert(img, key="gradient")
    assert db.search(img, k=1)[0].id == new
print("ok", imgvec.__version__)
"""


def test_the_wheel_installs_into_a_fresh_venv_and_works(tmp_path):
    wheels = tmp_path / "wheels"
    maturin = Path(sys.executable).parent / "maturin"
    # The dev profile reuses what the test build compiled; `pip install ./python` builds release.
    # A wheel for this machine (linux tag): no manylinux repair, which would bundle libtorch.
    build = [str(maturin), "build", "--quiet", "--auditwheel", "skip", "-i", sys.executable, "--out", str(wheels)]
    subprocess.run(build, cwd=PYTHON_DIR, check=True)
    [wheel] = list(wheels.glob("imgvec-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, str(wheel)], check=True)  # numpy comes from PyPI (or pip's cache)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", USE, str(tmp_path / "db")],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout.startswith("ok 0.1.0"), out.stdout + out.stderr
