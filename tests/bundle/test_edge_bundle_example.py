"""examples/edge_bundle.py runs as shipped: an ARM build verified and bundle-checked under qemu."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import require_arm

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edge_bundle.py"


def test_edge_bundle_example(tmp_path):
    require_arm()
    done = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verified under qemu against onnxruntime: True" in done.stdout
    assert "kws/bin/mlpc-run" in done.stdout and "kws/lib/libtvm_runtime.so" in done.stdout
    diff = float(re.search(r"relative difference to the host build (\S+)", done.stdout).group(1))
    assert diff <= 1e-4
    assert (tmp_path / "kws.tar.gz").is_file()
