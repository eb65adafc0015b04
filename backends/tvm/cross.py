"""Cross-compilation: the Debian toolchains and qemu-user emulators for targets whose
architecture is not this machine's, and the ELF checks that tell which machine a file is for.

    >>> from mlpc.backends.tvm.cross import toolchain
    >>> toolchain("aarch64").cxx
    'aarch64-linux-gnu-g++'
"""
from __future__ import annotations

import logging
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpc.errors import ArtifactError, ExportError, TargetError
from mlpc.targets import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Toolchain:
    """How to build and emulate code for one architecture (named as `platform.machine()` does)."""

    arch: str
    triple: str  # prefix of the Debian cross tools and their sysroot under /usr
    qemu: str  # the qemu-user emulator
    packages: tuple[str, ...]  # Debian packages providing the compiler, binutils and emulator
    elf_machine: int  # ELF e_machine of its binaries
    cxx_flags: tuple[str, ...] = ()

    @property
    def cxx(self) -> str:
        """The C++ cross compiler's command name."""
        return f"{self.triple}-g++"

    @property
    def objdump(self) -> str:
        """The cross objdump's command name."""
        return f"{self.triple}-objdump"

    @property
    def sysroot(self) -> Path:
        """The target's libc and loader as Debian installs them (qemu's `-L`)."""
        return Path("/usr") / self.triple

    def package_of(self, tool: str) -> str:
        """Return the Debian package that provides `tool` (a command name of this toolchain)."""
        if tool == self.qemu:
            return "qemu-user"
        if tool == self.objdump:
            return f"binutils-{self.triple}"
        return f"g++-{self.triple}"

    def require(self, tool: str) -> str:
        """Return the path of `tool`, or raise ExportError naming the Debian package to install."""
        path = shutil.which(tool)
        if path is None:
            raise ExportError(
                f"{tool} not found: install the Debian package {self.package_of(tool)} "
                "(`make setup` installs it)"
            )
        return path


TOOLCHAINS = {
    "x86_64": Toolchain("x86_64", "x86_64-linux-gnu", "qemu-x86_64", ("g++",), 62),
    "aarch64": Toolchain("aarch64", "aarch64-linux-gnu", "qemu-aarch64",
                         ("g++-aarch64-linux-gnu", "qemu-user"), 183),
    "armv7l": Toolchain("armv7l", "arm-linux-gnueabihf", "qemu-arm",
                        ("g++-arm-linux-gnueabihf", "qemu-user"), 40,
                        cxx_flags=("-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard")),
}
_ARCH_OF_ELF_MACHINE = {t.elf_machine: t.arch for t in TOOLCHAINS.values()}


def host_arch() -> str:
    """Return this machine's architecture as `platform.machine()` names it (x86_64, aarch64, armv7l)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def toolchain(arch: str) -> Toolchain:
    """Return the Toolchain for `arch`, or raise TargetError listing the known ones."""
    try:
        return TOOLCHAINS[arch]
    except KeyError:
        raise TargetError(f"no cross toolchain known for architecture {arch!r} "
                          f"(known: {', '.join(TOOLCHAINS)})") from None


def is_cross(target: Target) -> bool:
    """Return True when code for `target` is for another architecture than this machine's."""
    return target.arch != host_arch()


def export_options(target: Target) -> dict[str, Any]:
    """Return the keyword arguments of `export_library` that link a library for `target`:
    none for this machine's architecture, else the cross compiler (checked to be installed)."""
    if not is_cross(target):
        return {}
    from tvm.support import cc

    chain = toolchain(target.arch)
    chain.require(chain.cxx)
    logger.debug("linking for %s with %s", target.name, chain.cxx)
    return {"fcompile": cc.cross_compiler(chain.cxx, options=list(chain.cxx_flags))}


def elf_arch(path: Path) -> str | None:
    """Return the architecture an ELF file is built for (x86_64, aarch64, armv7l), None if it is
    not ELF or for another machine. Raises ArtifactError if the file cannot be read."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror})") from e
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byteorder = "little" if header[5] == 1 else "big"
    return _ARCH_OF_ELF_MACHINE.get(int.from_bytes(header[18:20], byteorder))
