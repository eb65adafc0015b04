"""Tuning for a board through TVM RPC, with the board emulated: mlpc's C++ RPC server
(`mlpc-rpc-server`, built for aarch64 against the wheel's runtime) runs under qemu-aarch64 on
loopback, registers with TVM's Python tracker, runs cross-compiled kernels sent to it, and
MetaSchedule's RPCRunner measures tuning candidates on it (times under qemu are not the
board's: what is tested is the flow)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mlpc.backends.tvm.cross import toolchain
from mlpc.backends.tvm.tuning import tune
from mlpc.backends.tvm.tuning_db import RECORDS

from test_rpc import _free_port, _wait_for_port

KEY = "mlpc-qemu-a72"
TARGET = "arm/cortex-a72"


@pytest.fixture(scope="module")
def server_binary() -> tuple[Path, Path]:
    """The aarch64 RPC server and the directory of its runtime libraries (module scope: built
    before the tuning tests switch to a private cache)."""
    chain = toolchain("aarch64")
    for tool in (chain.cxx, chain.qemu):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: install the Debian package {chain.package_of(tool)} (make setup)")
    from mlpc.bundle.device_runtime import runtime_for
    from mlpc.bundle.runner_build import build_rpc_server
    from mlpc.errors import TargetError

    try:
        runtime = runtime_for("aarch64")
    except TargetError as e:
        pytest.skip(str(e))
    return build_rpc_server("aarch64"), runtime.libraries[0].parent


def _wait_for_key(tracker_port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import time

    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the RPC server under qemu exited"
        try:
            if KEY in rpc.connect_tracker("127.0.0.1", tracker_port).text_summary():
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no RPC server registered with key {KEY} within {timeout:g}s")


@pytest.fixture
def qemu_tracker(server_binary, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A tracker on 127.0.0.1 and mlpc-rpc-server under qemu-aarch64 (key KEY); yields the
    tracker port and the server's log."""
    binary, lib_dir = server_binary
    chain = toolchain("aarch64")
    tracker_port, server_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                               "--port", str(tracker_port), "--port-end", str(tracker_port + 1)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for_port(tracker_port, timeout=120)
        with open(log, "w") as out:
            procs.append(subprocess.Popen(
                [chain.qemu, "-L", str(chain.sysroot), "-E", f"LD_LIBRARY_PATH={lib_dir}", str(binary),
                 "--host", "127.0.0.1", "--port", str(server_port), "--tracker", f"127.0.0.1:{tracker_port}",
                 "--key", KEY, "--workdir", str(tmp_path / "board")],
                stdout=out, stderr=subprocess.STDOUT))
        _wait_for_key(tracker_port, procs[-1])
        yield tracker_port, log
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.slow  # ~60-90 s: two Python processes importing TVM, then qemu sessions
@pytest.mark.timeout(400)
def test_tune_for_arm_through_rpc_server_under_qemu(dense_onnx: Path, tmp_path: Path, qemu_tracker) -> None:
    import tvm
    from tvm import rpc, te

    from mlpc.backends.tvm.tuning import export_shared
    from mlpc.targets import get_target

    tracker_port, log = qemu_tracker
    # 1. MetaSchedule measures tuning candidates for the board on it
    db = tmp_path / "db"
    result = tune(dense_onnx, TARGET, db, trials=4, trials_per_batch=4, population=32, use_cache=False,
                  rpc_tracker=f"127.0.0.1:{tracker_port}", rpc_key=KEY)
    [task] = result.tasks
    assert task.trials == 4 and task.best_ms is not None and task.best_ms > 0
    assert len((db / RECORDS).read_text().splitlines()) == 4
    assert log.read_text().count("load_module") == 4  # every candidate, each in its own session
    # 2. a cross-compiled kernel uploaded, loaded and run on the "board", results read back
    # (last: the server serves one session at a time, and this one lives as long as its tensors)
    a = te.placeholder((257,), name="a", dtype="int32")
    b = te.compute((257,), lambda i: a[i] * 3 + 1, name="b")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b])}), target=get_target(TARGET).tvm_target())
    path = Path(export_shared(lib, toolchain("aarch64").cxx))
    session = rpc.connect_tracker("127.0.0.1", tracker_port).request(KEY, session_timeout=120)
    session.upload(str(path))
    remote = session.load_module(path.name)
    x = np.arange(-128, 129, dtype=np.int32)
    dev = session.cpu()
    out = tvm.runtime.tensor(np.zeros(257, np.int32), dev)
    remote["main"](tvm.runtime.tensor(x, dev), out)
    np.testing.assert_array_equal(out.numpy(), x * 3 + 1)
