"""The CUDA toolkit side of the CUDA build: device code from CUDA C, and TVM's CUDA runtime on
machines without a GPU.

    >>> code = compile_device_code(cuda_source, "sm_80", workdir)   # doctest: +SKIP
    >>> code.resources["fused_matmul_add_kernel"].registers          # doctest: +SKIP
    40

`compile_device_code` runs nvcc (CUDA C → PTX for compute_XY), ptxas -v (PTX → cubin for sm_XY,
with each kernel's registers, shared memory and spills) and fatbinary (cubin + PTX in one image,
so newer GPUs JIT-compile the PTX). TVM only embeds precompiled device code when its CUDA
runtime library is loaded, and that library links against the driver `libcuda.so.1`; on a
machine without a driver, `ensure_cuda_runtime` builds a stub driver (every call fails with
CUDA_ERROR_NO_DEVICE) from the C source below and preloads it. Nothing of the stub ends up in
artifacts: on a GPU host TVM loads the real driver.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mlpc.errors import LoweringError

logger = logging.getLogger(__name__)

# The driver entry points libtvm_runtime_cuda.so imports (nm -D --undefined-only), plus those
# libcudart probes; every one fails as "no device".
_STUB_SOURCE = r"""
typedef int CUresult;
enum { NO_DEVICE = 100 };
static const char msg[] = "no CUDA driver (mlpc build-time stub)";
CUresult cuInit(unsigned f) { (void)f; return NO_DEVICE; }
CUresult cuDriverGetVersion(int *v) { if (v) *v = 0; return NO_DEVICE; }
CUresult cuDeviceGetCount(int *n) { if (n) *n = 0; return NO_DEVICE; }
CUresult cuGetErrorName(CUresult e, const char **s) { (void)e; if (s) *s = msg; return 0; }
CUresult cuGetErrorString(CUresult e, const char **s) { (void)e; if (s) *s = msg; return 0; }
#define STUB(name) CUresult name(void) { return NO_DEVICE; }
STUB(cuDeviceGet) STUB(cuDeviceGetAttribute) STUB(cuDeviceGetName) STUB(cuFuncSetAttribute)
STUB(cuLaunchKernelEx) STUB(cuModuleGetFunction) STUB(cuModuleLoadData) STUB(cuModuleUnload)
STUB(cuTensorMapEncodeTiled) STUB(cuGetProcAddress) STUB(cuGetProcAddress_v2) STUB(cuGetExportTable)
"""

# What TVM's own nvcc route passes (tvm.support.nvcc): half/bfloat16 operators on, fast math.
_NVCC_FLAGS = [
    "-O3", "--use_fast_math", "--expt-relaxed-constexpr",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
]


@dataclass(frozen=True)
class KernelResources:
    """What ptxas reports for one kernel: registers per thread, static shared memory per block,
    local-memory spills and stack frame (bytes)."""

    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int

    def to_json(self) -> dict[str, int]:
        """Return the fields as a dict."""
        return asdict(self)


@dataclass(frozen=True)
class DeviceCode:
    """Device code for one architecture: the CUDA C, its PTX, the cubin, the fatbin (cubin +
    PTX) and ptxas' per-kernel resources."""

    arch: str
    source: str
    ptx: bytes
    cubin: bytes
    fatbin: bytes
    ptxas_log: str
    resources: dict[str, KernelResources]


def find_tool(name: str) -> str:
    """Return the path of CUDA toolkit program `name` (PATH, then $CUDA_HOME/bin, /usr/local/cuda/bin).

    Raises LoweringError saying to install the CUDA toolkit when it is missing.
    """
    found = shutil.which(name)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / name).is_file():
            return str(Path(root) / "bin" / name)
    raise LoweringError(
        f"{name} not found: compiling for a CUDA target needs the CUDA toolkit (nvcc, ptxas, "
        "fatbinary) on PATH or in $CUDA_HOME/bin"
    )


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LoweringError(f"{what} failed ({' '.join(cmd)}):\n{(proc.stderr or proc.stdout).strip()}")
    return proc.stderr + proc.stdout


def compile_device_code(source: str, arch: str, workdir: Path) -> DeviceCode:
    """Compile CUDA C `source` for `arch` ("sm_80") in `workdir`; return the DeviceCode.

    Raises LoweringError with the tool's message when nvcc, ptxas or fatbinary fails.
    """
    sm = arch.removeprefix("sm_")
    cu, ptx, cubin, fatbin = (workdir / f"device.{ext}" for ext in ("cu", "ptx", "cubin", "fatbin"))
    cu.write_text(source)
    _run([find_tool("nvcc"), "--ptx", f"-arch=compute_{sm}", *_NVCC_FLAGS, "-o", str(ptx), str(cu)],
         f"nvcc (CUDA C → PTX for compute_{sm})")
    log = _run([find_tool("ptxas"), "-v", "-O3", f"-arch=sm_{sm}", "-o", str(cubin), str(ptx)],
               f"ptxas (PTX → cubin for sm_{sm})")
    _run([find_tool("fatbinary"), "-64", f"--create={fatbin}",
          f"--image3=kind=elf,sm={sm},file={cubin}", f"--image3=kind=ptx,sm={sm},file={ptx}"],
         "fatbinary")
    return DeviceCode(arch=arch, source=source, ptx=ptx.read_bytes(), cubin=cubin.read_bytes(),
                      fatbin=fatbin.read_bytes(), ptxas_log=log, resources=parse_ptxas_log(log))


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(text: str) -> dict[str, KernelResources]:
    """Parse `ptxas -v` output into {kernel name: KernelResources}, in the order ptxas lists them."""
    result: dict[str, KernelResources] = {}
    name: str | None = None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            name, fields = m.group(1), {}
        elif name is None:
            continue
        elif m := _PROPS.search(line):
            fields.update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif m := _USED.search(line):
            smem = _SMEM.search(line)
            result[name] = KernelResources(
                registers=int(m.group(1)), shared_bytes=int(smem.group(1)) if smem else 0,
                spill_stores=fields.get("spill_stores", 0), spill_loads=fields.get("spill_loads", 0),
                stack_bytes=fields.get("stack_bytes", 0),
            )
            name = None
    return result


def cuda_runtime_loaded() -> bool:
    """Return True when TVM's CUDA runtime (device API and module loader) is registered."""
    import tvm_ffi

    return tvm_ffi.get_global_func("device_api.cuda", allow_missing=True) is not None


def ensure_cuda_runtime() -> None:
    """Make TVM's CUDA runtime library load in this process, with a stub driver if there is none.

    Without it TVM embeds CUDA C instead of device code. Raises LoweringError when the stub
    cannot be built (no C compiler) or the runtime still does not load.
    """
    if cuda_runtime_loaded():
        return
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        ctypes.CDLL(str(_stub_driver()), mode=ctypes.RTLD_GLOBAL)
        logger.info("no CUDA driver here: preloaded a stub libcuda.so.1 so TVM embeds device code")
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
            package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL"
        )
    except (OSError, RuntimeError) as e:
        raise LoweringError(
            f"TVM's CUDA runtime (libtvm_runtime_cuda.so) does not load: {e}. It needs libcudart.so.13 "
            "from the CUDA 13 toolkit on the library path (e.g. LD_LIBRARY_PATH=/usr/local/cuda/lib64)"
        ) from e
    if not cuda_runtime_loaded():
        raise LoweringError("libtvm_runtime_cuda.so loaded but registered no CUDA device API")


def _stub_driver() -> Path:
    """Build the stub libcuda.so.1 into the user's cache (once per source version); return its path."""
    digest = hashlib.sha256(_STUB_SOURCE.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlpc" / f"cuda-stub-{digest}"
    lib = cache / "libcuda.so.1"
    if lib.is_file():
        return lib
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise LoweringError("building for CUDA without a CUDA driver needs a C compiler (cc/gcc) on PATH")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src, out = Path(tmp) / "stub.c", Path(tmp) / "libcuda.so.1"
        src.write_text(_STUB_SOURCE)
        _run([cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(out), str(src)],
             "building the stub CUDA driver")
        os.replace(out, lib)  # atomic: concurrent builds race harmlessly
    return lib
