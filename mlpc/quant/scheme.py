"""Quantization schemes as data: what bits, granularity, symmetry and observer each tensor gets.

A scheme string names weight and activation bits ("w8a8", "w4a8", "w2a8"); "a16" means
weight-only quantization ("w4a16", "w8a16"): activations stay float (float16 on a GPU with
`--dtype fp16`), weights are integers dequantized inside the kernel. A config (YAML or
JSON, or a dict) refines it per layer with glob rules on node names:

    scheme: w4a8
    layers:
      "conv1": {weight: {bits: 8}}                 # keep the first layer at 8 bits
      "*fc*":  {weight: {granularity: per_tensor, observer: minmax}}
    skip: ["classifier"]                           # leave these layers float
    bias_correction: true
    rounding: auto                                 # auto | nearest | gptq
    equalize: auto                                 # auto | true | false (cross-layer equalization)
    sequential: auto                               # auto | true | false (layer-by-layer calibration)

    >>> parse_scheme("w4a8").weight
    QuantSpec(bits=4, signed=True, granularity='per_channel', axis=None, symmetric=True, ...)
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mlpc.errors import QuantizationError

logger = logging.getLogger(__name__)

GRANULARITIES = ("per_tensor", "per_channel")
OBSERVERS = ("minmax", "percentile", "mse", "entropy")
SCALE_KINDS = ("float", "po2")
ROUNDINGS = ("auto", "nearest", "gptq")
MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    `bits` 2–8; `signed` (None for activations = decided from the observed range: unsigned when
    it is never negative); `granularity` "per_tensor" or "per_channel" (weights only); `axis` the
    channel axis (None = the layer's output-channel axis); `symmetric` (zero point 0) or
    asymmetric; `narrow_range`; `observer` (minmax, percentile, mse, entropy; None = minmax for
    8 bits, mse below); `percentile` for the percentile observer; `scale_kind` "float" or "po2".

        >>> QuantSpec(bits=4, signed=True, granularity="per_channel", axis=0)
    """

    bits: int = 8
    signed: bool | None = True
    granularity: str = "per_tensor"
    axis: int | None = None
    symmetric: bool = True
    narrow_range: bool = False
    observer: str | None = None
    percentile: float = 99.99
    scale_kind: str = "float"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise QuantizationError(f"bits={self.bits!r} is outside the supported range {MIN_BITS}..{MAX_BITS}")
        if self.granularity not in GRANULARITIES:
            raise QuantizationError(f"granularity {self.granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if self.observer is not None and self.observer not in OBSERVERS:
            raise QuantizationError(f"observer {self.observer!r} is not one of {', '.join(OBSERVERS)}")
        if self.scale_kind not in SCALE_KINDS:
            raise QuantizationError(f"scale_kind {self.scale_kind!r} is not one of {', '.join(SCALE_KINDS)}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise QuantizationError(f"percentile {self.percentile!r} must be in (50, 100]")
        if self.axis is not None and (isinstance(self.axis, bool) or not isinstance(self.axis, int)):
            raise QuantizationError(f"axis must be an integer or null, got {self.axis!r}")

    @property
    def observer_name(self) -> str:
        """The observer to use: the explicit one, else minmax at 8 bits and mse below."""
        return self.observer or ("minmax" if self.bits >= 8 else "mse")


DEFAULT_WEIGHT = QuantSpec(bits=8, signed=True, granularity="per_channel", symmetric=True, narrow_range=True)
# Activations are asymmetric: a non-negative tensor (ReLU) gets unsigned integers with zero point 0,
# exactly as a symmetric unsigned quantizer would; a lopsided signed one (GELU's output, in
# [-0.17, 20] in MiniLM) uses all 2^bits levels instead of wasting half of them on negative values
# that never occur (MiniLM w8a8 embeddings: cosine 0.983 → 0.993 to fp32).
DEFAULT_ACTIVATION = QuantSpec(bits=8, signed=None, granularity="per_tensor", symmetric=False)


@dataclass(frozen=True)
class LayerRule:
    """A config rule: layers whose node name matches `pattern` (a glob) get these specs
    (None = the scheme's), or stay float when `skip`."""

    pattern: str
    weight: QuantSpec | None = None
    activation: QuantSpec | None = None
    skip: bool = False


@dataclass(frozen=True)
class QuantConfig:
    """A whole quantization recipe: default weight/activation specs, per-layer rules (the last
    matching rule wins), and the algorithms to use.

    `bias_correction` (empirical, from calibration data); `rounding` "auto" (per layer, keep
    GPTQ's rounding when it lowers the layer's output error on calibration data, for weights of
    ≤ 4 bits), "nearest" or "gptq"; `equalize` "auto" (cross-layer equalization when weights are
    per tensor), True or False; `sequential` "auto" (when some weight has ≤ 4 bits: quantize
    layer by layer, calibrating each on the outputs of the already quantized layers before it),
    True or False.
    """

    weight: QuantSpec = DEFAULT_WEIGHT
    activation: QuantSpec = DEFAULT_ACTIVATION
    rules: tuple[LayerRule, ...] = ()
    bias_correction: bool = True
    rounding: str = "auto"
    equalize: str | bool = "auto"
    sequential: str | bool = "auto"
    name: str = "custom"
    weight_only: bool = False

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise QuantizationError(f"rounding {self.rounding!r} is not one of {', '.join(ROUNDINGS)}")
        for key in ("equalize", "sequential"):
            if getattr(self, key) not in (True, False, "auto"):
                raise QuantizationError(f"{key} must be true, false or 'auto', got {getattr(self, key)!r}")
        if self.activation.granularity != "per_tensor":
            raise QuantizationError("activations are quantized per tensor; per_channel is for weights only")

    def specs_for(self, layer: str) -> tuple[QuantSpec, QuantSpec] | None:
        """(weight spec, activation spec) for the layer named `layer`, or None to keep it float."""
        weight, activation = self.weight, self.activation
        for rule in self.rules:
            if fnmatch.fnmatchcase(layer, rule.pattern):
                if rule.skip:
                    return None
                weight = rule.weight or weight
                activation = rule.activation or activation
        return weight, activation

    def unmatched_rules(self, layers: list[str]) -> list[str]:
        """The rule patterns that match none of `layers`."""
        return [r.pattern for r in self.rules if not any(fnmatch.fnmatchcase(n, r.pattern) for n in layers)]


_SCHEME_RE = re.compile(r"^w(\d+)a(\d+)$")


def parse_scheme(scheme: str) -> QuantConfig:
    """A QuantConfig from a scheme string "w<bits>a<bits>" (2–8 each), e.g. "w4a8", or
    "w<bits>a16" for weight-only quantization (activations stay float), e.g. "w4a16".

    Weights are symmetric, per channel, narrow range; activations per tensor, asymmetric, signed
    or unsigned from the observed range (unsigned with zero point 0 when it is never negative).
    Raises QuantizationError for malformed strings or bits
    outside 2–8.
    """
    m = _SCHEME_RE.match(str(scheme).strip().lower())
    if m is None:
        raise QuantizationError(f"quantization scheme {scheme!r} is not of the form w<bits>a<bits>, e.g. w8a8 or w4a8")
    wbits, abits = int(m.group(1)), int(m.group(2))
    weight_only = abits == 16
    for kind, bits in (("weight", wbits), ("activation", 8 if weight_only else abits)):
        if not MIN_BITS <= bits <= MAX_BITS:
            raise QuantizationError(
                f"scheme {scheme!r}: {kind} bits {bits} are outside {MIN_BITS}..{MAX_BITS} "
                "(or a16 for float activations)"
            )
    return QuantConfig(
        weight=replace(DEFAULT_WEIGHT, bits=wbits), activation=replace(DEFAULT_ACTIVATION, bits=8 if weight_only else abits),
        name=scheme, weight_only=weight_only,
    )


def _spec(base: QuantSpec, data: Any, where: str) -> QuantSpec:
    if isinstance(data, int) and not isinstance(data, bool):
        data = {"bits": data}
    if not isinstance(data, Mapping):
        raise QuantizationError(f"{where}: expected a mapping of quantization settings or a bit width, got {data!r}")
    known = {f.name for f in fields(QuantSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise QuantizationError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")
    try:
        return replace(base, **dict(data))
    except QuantizationError as e:
        raise QuantizationError(f"{where}: {e}") from e


_TOP_KEYS = {"scheme", "weight", "activation", "layers", "skip", "bias_correction", "rounding", "equalize", "sequential"}


def config_from_dict(data: Mapping[str, Any], scheme: str | None = None, source: str = "config") -> QuantConfig:
    """A QuantConfig from a decoded config mapping (see the module doc); `scheme` (e.g. from the
    command line) overrides the config's own `scheme:` key. Raises QuantizationError naming
    `source` and the offending key."""
    if not isinstance(data, Mapping):
        raise QuantizationError(f"{source}: the quantization config must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise QuantizationError(f"{source}: unknown keys {unknown}; known: {sorted(_TOP_KEYS)}")
    base = parse_scheme(scheme or data.get("scheme") or "w8a8")
    weight = _spec(base.weight, data["weight"], f"{source}: weight") if "weight" in data else base.weight
    activation = (
        _spec(base.activation, data["activation"], f"{source}: activation") if "activation" in data else base.activation
    )
    rules: list[LayerRule] = []
    layers = data.get("layers") or {}
    if not isinstance(layers, Mapping):
        raise QuantizationError(f"{source}: 'layers' must map layer-name globs to settings")
    for pattern, settings in layers.items():
        where = f"{source}: layers[{pattern!r}]"
        if isinstance(settings, int) and not isinstance(settings, bool):
            settings = {"weight": settings}
        if not isinstance(settings, Mapping) or set(settings) - {"weight", "activation", "skip"}:
            raise QuantizationError(f"{where}: give 'weight', 'activation' and/or 'skip', got {settings!r}")
        rules.append(
            LayerRule(
                str(pattern),
                _spec(weight, settings["weight"], f"{where}.weight") if "weight" in settings else None,
                _spec(activation, settings["activation"], f"{where}.activation") if "activation" in settings else None,
                bool(settings.get("skip", False)),
            )
        )
    skip = data.get("skip") or []
    if isinstance(skip, str):
        skip = [skip]
    rules.extend(LayerRule(str(p), skip=True) for p in skip)
    try:
        return QuantConfig(
            weight=weight,
            activation=activation,
            rules=tuple(rules),
            bias_correction=bool(data.get("bias_correction", True)),
            rounding=str(data.get("rounding", "auto")),
            equalize=data.get("equalize", "auto"),
            sequential=data.get("sequential", "auto"),
            name=base.name,
            weight_only=base.weight_only,
        )
    except QuantizationError as e:
        raise QuantizationError(f"{source}: {e}") from e


def load_config(path: str | Path, scheme: str | None = None) -> QuantConfig:
    """Read a YAML (.yaml/.yml) or JSON quantization config file into a QuantConfig."""
    path = Path(path)
    if not path.is_file():
        raise QuantizationError(f"quantization config {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:
        raise QuantizationError(f"quantization config {path}: cannot parse it ({e})") from e
    return config_from_dict(data or {}, scheme, source=str(path))


def resolve_config(
    scheme: str | QuantConfig | None = None, config: str | Path | Mapping[str, Any] | None = None
) -> QuantConfig:
    """The QuantConfig for a scheme string or QuantConfig plus an optional config file/dict."""
    if isinstance(scheme, QuantConfig):
        if config is not None:
            raise QuantizationError("give either a QuantConfig or a scheme string with a config, not both")
        return scheme
    if config is None:
        return parse_scheme(scheme or "w8a8")
    if isinstance(config, Mapping):
        return config_from_dict(config, scheme)
    return load_config(config, scheme)


__all__ = [
    "QuantConfig",
    "QuantSpec",
    "LayerRule",
    "config_from_dict",
    "load_config",
    "parse_scheme",
    "resolve_config",
]
