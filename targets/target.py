"""The Target type: a hardware kind described as data."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

ARCH_OF_KIND = {"x86": "x86_64", "arm": "aarch64"}


@dataclass(frozen=True)
class Target:
    """A compilation target.

    `tvm` is the TVM target as a JSON dict (TVM 0.27 accepts dicts only); `required_features`
    are CPU flags (as in /proc/cpuinfo) a machine must have to run code built for this target;
    `capabilities` holds what hardware-aware passes read (vector width, integer dot products,
    bit widths that run fast, cores).

        >>> from mlpc.targets import get_target
        >>> get_target("x86/avx2").kind
        'x86'
    """

    name: str
    kind: str
    description: str
    tvm: dict[str, Any]
    backend: str = "tvm"
    arch: str = "x86_64"
    required_features: tuple[str, ...] = ()
    capabilities: dict[str, Any] = field(default_factory=dict)

    def tvm_target(self) -> Any:
        """Return the `tvm.target.Target` built from `self.tvm`."""
        import tvm

        return tvm.target.Target(dict(self.tvm))

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable description (what manifests and `mlpc targets --json` show)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "backend": self.backend,
            "arch": self.arch,
            "tvm": self.tvm,
            "required_features": list(self.required_features),
            "capabilities": self.capabilities,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        """Rebuild a Target from `to_json()` output (e.g. an artifact's manifest)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["required_features"] = tuple(fields.get("required_features", ()))
        return cls(**fields)

    def missing_on_host(self) -> list[str]:
        """Return why code for this target cannot run on this machine (empty when it can)."""
        if self.kind == "cuda":
            from mlpc.targets.cuda import cuda_missing_on_host

            return cuda_missing_on_host(self)
        if self.kind == "fpga":
            return ["an FPGA design is not run by mlpc: simulate it (its testbench) or build a bitstream with "
                    "the vendor tools"]
        problems = []
        machine = platform.machine().lower()
        if machine in ("amd64",):
            machine = "x86_64"
        if machine != self.arch:
            problems.append(f"built for {self.arch}, this machine is {machine}")
        else:
            flags = host_cpu_flags()
            missing = [f for f in self.required_features if f not in flags]
            if missing:
                problems.append("this CPU lacks " + ", ".join(missing))
        return problems


def host_cpu_flags() -> set[str]:
    """Return the CPU feature flags of this machine, read from /proc/cpuinfo (empty if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
