"""Remote measurement: MetaSchedule's RPCRunner through TVM's tracker and a server on loopback."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpc.backends.tvm.tuning import tune
from mlpc.backends.tvm.tuning_db import RECORDS

KEY = "mlpc-test-device"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the RPC tracker did not listen on port {port} within {timeout:g}s")


def _wait_for_server(tracker_port: int, timeout: float = 60.0) -> None:
    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if KEY in rpc.connect_tracker("127.0.0.1", tracker_port).text_summary():
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no RPC server registered with key {KEY} within {timeout:g}s")


@pytest.fixture
def rpc_tracker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A tracker and one server (key KEY) on 127.0.0.1; yields the tracker port and the server log."""
    tracker_port, server_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                               "--port", str(tracker_port), "--port-end", str(tracker_port + 1)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for_port(tracker_port)
        with open(log, "w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                 "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{tracker_port}", "--key", KEY],
                stdout=out, stderr=subprocess.STDOUT))
        _wait_for_server(tracker_port)
        yield tracker_port, log
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.timeout(240)
def test_tune_measures_through_rpc_server(dense_onnx: Path, tmp_path: Path, rpc_tracker: tuple[int, Path]) -> None:
    tracker_port, log = rpc_tracker
    db = tmp_path / "db"
    result = tune(dense_onnx, "host", db, trials=4, trials_per_batch=4, population=32, use_cache=False,
                  rpc_tracker=f"127.0.0.1:{tracker_port}", rpc_key=KEY)
    [task] = result.tasks
    assert task.trials == 4 and task.best_ms is not None and task.best_ms > 0
    assert len((db / RECORDS).read_text().splitlines()) == 4
    assert "load_module" in log.read_text()  # the server loaded and ran the candidates
