"""What selects the CPU's kernels, as a key for figures measured once per machine.

The same shapes run different kernels, with different speed and different scratch, when the
ISA the kernel libraries may use changes: ATen dispatches its vectorised kernels by
``torch.backends.cpu.get_cpu_capability()`` (capped by ``ATEN_CPU_CAPABILITY``), oneDNN picks its
convolution and matmul implementations from the CPU's flags capped by ``ONEDNN_MAX_CPU_ISA`` (under
``AVX2`` a bf16 convolution falls back to ATen's im2col, and oneDNN blocks channels by 8 instead
of 16), and both follow their versions, the thread count and ``torch.backends.mkldnn``. A cached
GEMM peak or kernel scratch is only valid for the same selection, so the caches are keyed by all of
it, and a record names it (``env``: ``cpu_capability``, ``onednn_max_cpu_isa``, ``onednn_version``,
``kernel_key``) so that two runs under different ISAs read as two machines.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
from pathlib import Path

import torch

#: Variables the kernel libraries read to cap or steer the ISA they use (``DNNL_`` is oneDNN's
#: older spelling of ``ONEDNN_``).
ISA_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_CPU_ISA_HINTS",
    "MKL_ENABLE_INSTRUCTIONS",
)


def _cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``platform`` where ``/proc/cpuinfo`` is missing)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


@functools.cache
def _cpu_flags() -> str:
    """A digest of the CPU's feature flags, in any order."""
    flags = _cpuinfo("flags") or _cpuinfo("Features") or ""
    return hashlib.sha1(" ".join(sorted(flags.split())).encode()).hexdigest()[:12]


@functools.cache
def onednn_version() -> str | None:
    """oneDNN's version as torch was built with it (``torch.__config__.show()``), or None."""
    found = re.search(r"(?:MKL-DNN|oneDNN)[^\n]*?\bv(\d+(?:\.\d+)*)", torch.__config__.show())
    return found[1] if found else None


def selection() -> dict[str, object]:
    """Everything that selects the CPU kernel of a call, now: the CPU (model and flags, which a
    VM may hide), torch and oneDNN versions, ATen's capability, the ISA variables that are set,
    the thread count and whether oneDNN is on."""
    chosen = {
        "cpu_model": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "torch_version": torch.__version__,
        "onednn_version": onednn_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.enabled) and torch.backends.mkldnn.is_available(),
    }
    chosen |= {name: os.environ[name] for name in ISA_ENV if os.environ.get(name)}
    return {key: value for key, value in chosen.items() if value is not None}


def kernel_key() -> str:
    """A short stable digest of ``selection()``: equal keys, equal kernels."""
    text = json.dumps(selection(), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def kernel_env() -> dict[str, str]:
    """The record's description of the selection: the capability, the oneDNN ISA cap where one
    is set, oneDNN's version where known, and the key of the whole selection."""
    chosen = selection()
    env = {
        "cpu_capability": chosen["cpu_capability"],
        "onednn_max_cpu_isa": chosen.get("ONEDNN_MAX_CPU_ISA") or chosen.get("DNNL_MAX_CPU_ISA"),
        "onednn_version": chosen.get("onednn_version"),
        "kernel_key": kernel_key(),
    }
    return {key: str(value) for key, value in env.items() if value is not None}
