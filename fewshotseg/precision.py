"""Mixed precision: which dtype autocast should use on a device, and the context for it.

On CUDA, bfloat16 where the GPU supports it, else float16 (which needs a gradient scaler in
training). On a CPU, bfloat16 only where the processor executes it natively (x86 AVX512-BF16 or
AMX, Arm's BF16 extension): there PyTorch's oneDNN kernels run bf16 convolutions about twice as
fast as fp32; elsewhere bf16 is emulated and slower than fp32, so we stay in fp32 and say so once.

``amp`` everywhere (`TrainConfig.amp`, `SupportQueryPredictor(amp=...)`, the CLI's ``--amp``)
takes ``False`` (fp32), ``True`` (mixed precision where it is fast, fp32 with an info message
where it is not) or ``"auto"`` (the same, silently).

Example:
    >>> import torch
    >>> autocast_dtype(False, "cpu") is None
    True
    >>> autocast_dtype("auto", "cpu") in (None, torch.bfloat16)
    True
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "AmpMode",
    "autocast",
    "autocast_dtype",
    "check_amp",
    "cpu_has_native_bf16",
    "cpuinfo_has_native_bf16",
    "prefers_channels_last",
]

logger = logging.getLogger(__name__)

AmpMode = bool | Literal["auto"]
"""An ``amp`` setting: ``False`` (fp32), ``True`` or ``"auto"`` (see the module docstring)."""

#: /proc/cpuinfo flags that mean native bf16 arithmetic (x86: AVX512-BF16 dot products, AMX
#: tiles; Arm: the BF16 extension).
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpuinfo_has_native_bf16(text: str) -> bool:
    """Whether ``/proc/cpuinfo`` text names a native bf16 flag on its first ``flags`` line
    (x86) or ``Features`` line (Arm).

    Example:
        >>> cpuinfo_has_native_bf16("processor : 0\\nflags : fpu avx512f avx512_bf16\\n")
        True
        >>> cpuinfo_has_native_bf16("flags : fpu avx2 fma\\n")
        False
    """
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return bool(_BF16_FLAGS.intersection(value.split()))
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU executes bfloat16 natively (AVX512-BF16, AMX-BF16 or Arm BF16).

    Read from ``/proc/cpuinfo`` on Linux (once; cached); False where it cannot be read (other
    systems), so the safe fp32 path is taken.

    Example:
        >>> cpu_has_native_bf16() in (True, False)  # depends on the machine
        True
    """
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return cpuinfo_has_native_bf16(text)


def check_amp(amp: Any) -> AmpMode:
    """Validate an ``amp`` setting: ``True``, ``False`` or ``"auto"``; returned unchanged.

    Example:
        >>> check_amp("auto")
        'auto'
        >>> check_amp("bf16")
        Traceback (most recent call last):
        ...
        ValueError: amp must be True, False or 'auto', got 'bf16'
    """
    if isinstance(amp, bool) or amp == "auto":
        return amp
    raise ValueError(f"amp must be True, False or 'auto', got {amp!r}")


def autocast_dtype(amp: AmpMode, device: str | torch.device) -> torch.dtype | None:
    """The dtype autocast should use for ``amp`` on ``device``, or None for fp32.

    Args:
        amp: ``False``, ``True`` or ``"auto"`` (see the module docstring).
        device: where the model runs.

    Returns:
        ``torch.bfloat16`` or ``torch.float16`` (CUDA without bf16), or None.

    Example:
        >>> autocast_dtype(False, "cuda") is None  # fp32 asked: no device query at all
        True
    """
    amp = check_amp(amp)
    if amp is False:
        return None
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    if amp is True:
        _log_fp32_fallback(kind)
    return None


@functools.cache
def _log_fp32_fallback(kind: str) -> None:
    # once per device kind: emulated bf16 would be slower than fp32, so amp stays off
    reason = "this CPU has no native bf16" if kind == "cpu" else f"no mixed precision on {kind}"
    logger.info("amp=True: %s; running in float32", reason)


def prefers_channels_last(dtype: torch.dtype | None, device: str | torch.device) -> bool:
    """Whether a model run under autocast ``dtype`` on ``device`` should be channels-last.

    True for bf16 on a CPU: oneDNN's bf16 convolutions are much faster on channels-last
    tensors (a first measurement on an AVX512-BF16/AMX CPU: ResNet-101 and ResNet-18 training
    steps 1.7-1.8x faster than bf16 in the default layout; docs/benchmarks.md has the
    figures). In fp32 the layout gains little (and lost on an AVX2 CPU); on CUDA we leave the
    layout alone.

    Example:
        >>> prefers_channels_last(torch.bfloat16, "cpu"), prefers_channels_last(None, "cpu")
        (True, False)
    """
    return dtype == torch.bfloat16 and torch.device(device).type == "cpu"


def autocast(dtype: torch.dtype | None, device: str | torch.device) -> Any:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None.

    Example:
        >>> x = torch.ones(2, 2)
        >>> with autocast(None, "cpu"):
        ...     print((x @ x).dtype)
        torch.float32
        >>> with autocast(torch.bfloat16, "cpu"):
        ...     print((x @ x).dtype)
        torch.bfloat16
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
