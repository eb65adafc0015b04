"""The mixed-precision screening benchmark: its summary table, and the candidate models' export."""

from __future__ import annotations

from benchmarks import mixed_screen, quant_models


def _seed(fp32, w8, w4, mixed, bits, uniform4=False):
    return {
        "fp32": fp32,
        "uniform 8-bit": w8,
        "uniform 4-bit": w4,
        "mixed": mixed,
        "bits": bits,
        "mixed_is_uniform_4": uniform4,
        "test_samples": 2000,
    }


def test_summary_gives_means_losses_and_gains_per_seed():
    models = {
        "m": {
            "description": "a model",
            "seeds": {
                "0": _seed(90.0, 89.5, 87.0, 88.5, {"a": 8, "b": 2}),
                "1": _seed(88.0, 88.0, 87.0, 87.0, {"a": 4, "b": 4}, uniform4=True),
            },
        }
    }
    (row,) = mixed_screen.summary_rows(models)
    assert row == [
        "m: a model",
        "0, 1 (2000)",
        "89.00",
        "88.75",
        "87.00",
        "87.75",
        "-3.00, -1.00",
        "+1.50, =",
        "8/2; 4/4",
    ]
    data = {"machine": {"cpu": "cpu", "cores": 2, "versions": {"mlpc": "0"}, "date": "d"}, "models": models}
    assert "| m: a model | 0, 1 (2000) | 89.00 |" in mixed_screen.render(data)


def test_candidates_export_the_layers_mlpc_quantizes():
    from mlpc.mixed.layers import onnx_layers
    from mlpc.mixed.sensitivity import prepare_graph

    def layers(trained):
        infos, _ = onnx_layers(prepare_graph(trained.model).graph)
        return [info.params for info in infos]

    tf = quant_models.train_mnist1d_transformer(epochs=1, samples=200, d=8, heads=2, ff=16, depth=1)
    assert layers(tf) == [4 * 8] + [8 * 8] * 4 + [8 * 16, 16 * 8] + [8 * 10]
    head = quant_models.train_mnist1d_wide_head(
        epochs=1, samples=200, widths=(4, 4), batchnorm=True, hidden=32
    )
    assert not [
        n for n in head.model.graph.node if n.op_type == "BatchNormalization"
    ]  # folded into the convs
    assert layers(head) == [4 * 5, 4 * 4 * 3, 4 * 20 * 32, 32 * 32, 32 * 10]
    ds = quant_models.train_mnist1d_dscnn(epochs=1, samples=200, width=4, blocks=2)
    assert layers(ds) == [4 * 5, 4 * 5, 4 * 4, 4 * 5, 4 * 4, 4 * 20 * 128, 128 * 10]
