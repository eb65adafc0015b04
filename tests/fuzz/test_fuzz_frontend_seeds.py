"""The atheris target of fuzz_onnx_frontend.py, run without atheris on deterministic mutations of
its seeds (truncations, byte flips, splices): every input loads or is refused with an MlpcError.
`make fuzz` runs the coverage-guided search itself."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_onnx_frontend import load_bytes, seed_models  # noqa: E402

SEEDS = seed_models()


def _mutations(seed: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    out = [seed[:n] for n in sorted({int(v) for v in np.linspace(0, len(seed) - 1, 24)})]
    for _ in range(count):
        data = bytearray(seed)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(data)))
            data[i] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(0, 256))]))
        out.append(bytes(data))
    other = SEEDS[int(rng.integers(0, len(SEEDS)))]
    cut = int(rng.integers(1, min(len(seed), len(other))))
    out.append(seed[:cut] + other[cut:])
    return out


def test_seeds_load_and_hostile_external_data_is_refused():
    for seed in SEEDS[:-1]:
        load_bytes(seed, refusal_ok=False)
    with pytest.raises(Exception, match="external data file 'weights.bin'.*missing"):
        load_bytes(SEEDS[-1], refusal_ok=False)


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_mutated_seeds_load_or_are_refused(index):
    rng = np.random.default_rng(index)
    for data in _mutations(SEEDS[index], rng, 150):
        load_bytes(data)
