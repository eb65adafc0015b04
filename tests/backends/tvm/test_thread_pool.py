"""mlpc leaves TVM's thread-pool workers unpinned (see mlpc/__init__.py), unless the user says otherwise."""
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("preset", "expected"), [(None, "0"), ("1", "1")])
def test_importing_mlpc_unpins_tvm_workers_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "TVM_BIND_THREADS"}
    if preset is not None:
        env["TVM_BIND_THREADS"] = preset
    code = "import os, mlpc; print(os.environ['TVM_BIND_THREADS'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
