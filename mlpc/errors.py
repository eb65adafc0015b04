"""The errors mlpc raises.

Every error a user can cause derives from `MlpcError`; its message names the file, node, op,
option or pass at fault and says what to do. The CLI prints it on one line and exits with 2
(`VerificationError` exits with 1).
"""
from __future__ import annotations


class MlpcError(Exception):
    """Root of every error mlpc raises on purpose."""

    exit_code = 2


class ModelLoadError(MlpcError):
    """A model file is missing, unreadable, not ONNX, or structurally broken."""


class IRVerificationError(MlpcError):
    """A graph breaks an IR invariant (SSA, types, shapes, quantization consistency)."""


class PassError(MlpcError):
    """A pass failed or left the graph invalid; the message names the pass."""


class UnsupportedOpError(MlpcError):
    """One or more nodes use ops that mlpc cannot lower; lists every one with its node name."""


class QuantizationError(MlpcError):
    """Bad quantization parameters, scheme or calibration data."""


class TargetError(MlpcError):
    """An unknown target name, or an artifact built for a different machine."""


class LoweringError(MlpcError):
    """Lowering to or building with TVM failed; wraps TVM's own error."""


class ExportError(MlpcError):
    """Writing an artifact or an exported model failed."""


class ArtifactError(MlpcError):
    """An artifact directory is missing, incomplete or fails its checksums."""


class InputError(MlpcError):
    """Inputs given to a compiled model or a command do not match what it expects."""


class VerificationError(MlpcError):
    """The compiled model's outputs differ from the reference beyond tolerance."""

    exit_code = 1
