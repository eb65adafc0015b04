"""A complete user pass: rewrite x·sigmoid(x) into one mlpc SiLU op, lowered as one kernel.

Use it from the command line (the file registers its pass when loaded):

    mlpc compile model.onnx -o out/ --pass-plugin examples/custom_pass.py --verify
    mlpc passes --pass-plugin examples/custom_pass.py      # lists fuse-silu after canonicalize

or run it to see it work on a small PyTorch model:

    python examples/custom_pass.py
"""
from __future__ import annotations

from mlpc.rewrite import RewriteRule, rewrite_pass


def x_times_sigmoid(op, x):
    """The pattern: Mul(x, Sigmoid(x)); the pass also matches Mul(Sigmoid(x), x)."""
    return op.Mul(x, op.Sigmoid(x))


def silu(op, x):
    """The replacement: one SiLU node of the mlpc domain."""
    return op.SiLU(x, _domain="mlpc")


rewrite_pass(
    "fuse-silu",
    [RewriteRule(x_times_sigmoid, silu)],
    description="x * sigmoid(x) -> mlpc::SiLU (one kernel)",
)


def main() -> None:
    """Compile a small convolutional block with SiLU activations with and without the pass."""
    import torch

    import mlpc

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y * torch.sigmoid(y)

    torch.manual_seed(0)
    module, x = Block().eval(), torch.randn(1, 3, 16, 16)
    plain = mlpc.compile(module, example_inputs=(x,), disabled_passes=["fuse-silu"])
    fused = mlpc.compile(module, example_inputs=(x,), verify=True)
    print("ops without the pass:", plain.manifest["stats"]["ops"])
    print("ops with fuse-silu:  ", fused.manifest["stats"]["ops"])
    print("verified against PyTorch:", fused.verification["passed"],
          f"(max rel err {fused.verification['outputs'][0]['rel_err']:.1e})")


if __name__ == "__main__":
    main()
