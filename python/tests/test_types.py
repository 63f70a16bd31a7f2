"""The package's type information (inline hints, `_imgvec.pyi`, `py.typed`) checks under mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_mypy_strict_accepts_the_public_api():
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(HERE / "typed_usage.py")],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    assert out.returncode == 0, out.stdout + out.stderr
