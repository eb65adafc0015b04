"""A small zoo of reference models written in PyTorch, for tests, examples and benchmarks.

Each model is small enough to export and compile in seconds but has the structure of a real
network (residual blocks, depthwise convolutions, attention). Weights are seeded, and every
BatchNorm/LayerNorm carries non-trivial random statistics and affine parameters, so BN folding
and normalization lowering are really exercised rather than folding to identities.

    from mlpc import zoo
    model = zoo.build("resnet")                      # torch.nn.Module in eval mode
    (x,) = zoo.example_inputs("resnet", batch=4)     # torch.Tensor [4, 3, 32, 32]
    path = zoo.export_onnx("resnet", "resnet.onnx", opset=18, dynamic_batch=True)
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from mlpc.errors import ExportError, ModelLoadError

if TYPE_CHECKING:
    import onnx_ir as ir

logger = logging.getLogger(__name__)

Exporter = Literal["dynamo", "legacy"]
EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
_INIT_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one model.

    `input_shapes(batch)` returns one shape per input (in `input_names` order); every input has
    `input_dtype`. `builder()` returns a freshly constructed module with random weights; use
    `build(name)` to get the seeded, eval-mode model.
    """

    name: str
    description: str
    builder: Callable[[], nn.Module]
    input_names: tuple[str, ...]
    input_shapes: Callable[[int], tuple[tuple[int, ...], ...]]
    input_dtype: torch.dtype = torch.float32
    output_names: tuple[str, ...] = ("logits",)


# --------------------------------------------------------------------------------------------
# Model definitions


class MLP(nn.Module):
    """784 → 256 → 128 → 10 with ReLU, e.g. for flattened 28×28 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class BasicBlock(nn.Module):
    """ResNet basic block; a strided or widening block projects the shortcut with a 1×1 conv."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride), nn.ReLU(), *_conv_bn(cout, cout, 3))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-sized ResNet: stem, three stages (16, 32, 64 channels), pool, linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 16, 3), nn.ReLU())
        self.stages = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.head(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """MobileNet-V2 block: 1×1 expand, 3×3 depthwise, 1×1 linear projection, residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += _conv_bn(hidden, cout, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """A narrow MobileNet-V2 for 32×32 images: depthwise separable convs, ReLU6, BN."""

    # (output channels, stride, expansion) per inverted-residual block
    BLOCKS = ((16, 1, 1), (24, 2, 4), (24, 1, 4), (32, 2, 4), (32, 1, 4))

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, 16, 3, 2), nn.ReLU6()]
        cin = 16
        for cout, stride, expand in self.BLOCKS:
            layers.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        layers += [*_conv_bn(cin, 128, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class Conv1dNet(nn.Module):
    """A keyword-spotting style 1-D CNN over [B, 16 features, 128 frames]; 12 classes."""

    def __init__(self, num_classes: int = 12) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int) -> list[nn.Module]:
            return [nn.Conv1d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(16, 32, 5), nn.MaxPool1d(2), *block(32, 64, 3), nn.MaxPool1d(2), *block(64, 64, 3)
        )
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=-1))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out with MatMul and Softmax (no fused SDPA op)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d_model // heads
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, S, D] -> [B, H, S, Dh]
            return t.reshape(b, s, self.heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(ctx.transpose(1, 2).reshape(b, s, d))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + MHSA(LN(x)), then x + FFN(LN(x)) with GELU."""

    def __init__(self, d_model: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Transformer(nn.Module):
    """A 2-layer encoder (d_model 64, 4 heads, seq 32) with mean pooling and a linear head.

    With `vocab` set the input is int64 token ids [B, 32] embedded by a table lookup (Gather);
    otherwise it is float features [B, 32, 64] passed through a linear input projection.
    """

    def __init__(self, vocab: int | None = None, d_model: int = 64, heads: int = 4, seq: int = 32,
                 layers: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.embed: nn.Module = nn.Embedding(vocab, d_model) if vocab else nn.Linear(d_model, d_model)
        self.pos = nn.Parameter(torch.randn(seq, d_model) * 0.1)
        self.layers = nn.Sequential(*(EncoderLayer(d_model, heads, 2 * d_model) for _ in range(layers)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.embed(x) + self.pos)
        return self.head(self.norm(h).mean(dim=1))


# --------------------------------------------------------------------------------------------
# Registry

_SEQ, _VOCAB = 32, 256

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("mlp", "MLP 784→256→128→10 with ReLU", MLP, ("x",), lambda b: ((b, 784),)),
        ModelSpec("resnet", "ResNet-style CNN, 3 residual stages with BN, strided 1×1 projections",
                  ResNet, ("x",), lambda b: ((b, 3, 32, 32),)),
        ModelSpec("mobilenet", "MobileNet-V2-style: inverted residuals, depthwise convs, ReLU6, BN",
                  MobileNetV2, ("x",), lambda b: ((b, 3, 32, 32),)),
        ModelSpec("conv1d", "1-D CNN for keyword spotting: Conv1d, BN, ReLU, MaxPool1d, mean pool",
                  Conv1dNet, ("x",), lambda b: ((b, 16, 128),)),
        ModelSpec("transformer", "2-layer transformer encoder, d_model 64, 4 heads, float input",
                  Transformer, ("x",), lambda b: ((b, _SEQ, 64),)),
        ModelSpec("transformer_ids", "the transformer with an int64 token-id input and embedding (Gather)",
                  lambda: Transformer(vocab=_VOCAB), ("ids",), lambda b: ((b, _SEQ),), torch.int64),
    )
}


def get_spec(name: str) -> ModelSpec:
    """Return the `ModelSpec` of zoo model `name`; raises `ModelLoadError` naming the known models."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown zoo model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None


def _randomize_norm_stats(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm/LayerNorm random statistics and affine parameters (not identities)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def build(name: str) -> nn.Module:
    """Build zoo model `name` with seeded weights, in eval mode; same weights on every call.

    >>> build("mlp")(torch.zeros(1, 784)).shape
    torch.Size([1, 10])
    """
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(_INIT_SEED)
        model = spec.builder()
        _randomize_norm_stats(model, torch.Generator().manual_seed(_INIT_SEED + 1))
    return model.eval()


def example_inputs(name: str, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Return deterministic inputs for `name`, one tensor per input: N(0, 1) floats or token ids."""
    spec = get_spec(name)
    gen = torch.Generator().manual_seed(seed)
    if spec.input_dtype == torch.int64:
        return tuple(torch.randint(0, _VOCAB, s, generator=gen) for s in spec.input_shapes(batch))
    return tuple(torch.randn(s, generator=gen, dtype=spec.input_dtype) for s in spec.input_shapes(batch))


# Loggers the exporters warn through (torch's own handler writes to the real stderr).
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow the exporters' prints, warnings and log chatter; what they printed is logged at DEBUG."""
    out = io.StringIO()
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if out.getvalue().strip():
            logger.debug("exporter output:\n%s", out.getvalue())


def _drop_reduce_noop_attr(graph: ir.Graph) -> None:
    """Remove `noop_with_empty_axes=0` that onnx's 18→17 converter leaves on ReduceMean & co.

    The attribute only exists from opset 18 (ReduceSum: 13); at 0 it is the old default, so
    dropping it keeps the meaning, and onnxruntime rejects the model with it.
    """
    for node in graph:
        if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum":
            attr = node.attributes.get("noop_with_empty_axes")
            if attr is not None:
                if attr.as_int() != 0:
                    raise RuntimeError(f"{node.name}: noop_with_empty_axes=1 has no opset-17 form")
                del node.attributes["noop_with_empty_axes"]


def _export_dynamo(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int,
                   dynamic_batch: bool, common: dict[str, Any]) -> None:
    dims = {0: torch.export.Dim("batch", min=1)} if dynamic_batch else None
    program = torch.onnx.export(model, args, None, dynamo=True,
                                dynamic_shapes=tuple(dims for _ in args) if dims else None, **common)
    # Below its native opset (18) torch converts before optimizing and silently keeps 18 when
    # that fails; converting the optimized graph works, so do it here.
    if program.model.opset_imports.get("", opset) != opset:
        from onnxscript import version_converter

        version_converter.convert_version(program.model, opset, fallback=True)
        _drop_reduce_noop_attr(program.model.graph)
    got = program.model.opset_imports.get("")
    if got != opset:
        raise RuntimeError(f"the model stayed at opset {got}: version conversion to {opset} failed")
    program.save(str(path), external_data=False)


def export_onnx(name: str, path: str | Path, batch: int = 1, opset: int = 18,
                exporter: Exporter = "dynamo", dynamic_batch: bool = False) -> Path:
    """Export zoo model `name` to an ONNX file at `path` (weights inside the file); return the path.

    `exporter="dynamo"` uses `torch.onnx.export(..., dynamo=True)` (torch.export based);
    `"legacy"` the TorchScript exporter. With `dynamic_batch` the first dimension of every input
    and output is the symbol "batch" (the legacy exporter then emits Shape → Gather → Concat →
    Reshape chains for the transformer's reshapes). Raises `ExportError` if the export fails.

    >>> export_onnx("mlp", "/tmp/mlp.onnx", opset=17, exporter="legacy")
    PosixPath('/tmp/mlp.onnx')
    """
    spec = get_spec(name)
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r} for zoo model {name!r}; use one of {EXPORTERS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build(name)
    # torch.export specializes dimensions of size 1, so trace a dynamic batch with two samples.
    args = example_inputs(name, max(batch, 2) if dynamic_batch and exporter == "dynamo" else batch)
    common = dict(input_names=list(spec.input_names), output_names=list(spec.output_names),
                  opset_version=opset, verbose=False)
    try:
        with _quiet(), torch.no_grad():
            if exporter == "dynamo":
                _export_dynamo(model, args, path, opset, dynamic_batch, common)
            else:
                axes = {n: {0: "batch"} for n in (*spec.input_names, *spec.output_names)}
                torch.onnx.export(model, args, str(path), dynamo=False, do_constant_folding=True,
                                  dynamic_axes=axes if dynamic_batch else None, **common)
    except Exception as e:  # the exporters raise many unrelated types
        raise ExportError(
            f"exporting zoo model {name!r} with the {exporter} exporter at opset {opset} to {path} "
            f"failed: {type(e).__name__}: {e}"
        ) from e
    logger.info("exported zoo model %s (%s, opset %d, batch %s) to %s", name, exporter, opset,
                "dynamic" if dynamic_batch else batch, path)
    return path
