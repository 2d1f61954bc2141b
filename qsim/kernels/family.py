"""Which of ONNX Runtime's float32 kernel families qsim reproduces.

MLAS (ONNX Runtime's math library) chooses its kernels once, from CPUID and XGETBV
(``MLAS_PLATFORM::MLAS_PLATFORM`` in ``platform.cpp``)::

    FMA3 and AVX2 and OS saves YMM state                       -> the FMA3/AVX2 kernels   "avx2"
    ... and AVX512F and OS saves ZMM/opmask state (XCR0 & 0xE0) -> the AVX512F kernels     "avx512"

qsim names the two families ``"avx2"`` and ``"avx512"``. ``"auto"`` makes the same test on the
host (LLVM's host feature list, which reads CPUID and XCR0 as MLAS does), so qsim equals the
ONNX Runtime, and therefore the AIMET, of this machine. Naming a family gives the same bits on
every machine. A CPU without AVX2/FMA3 runs MLAS's SSE/AVX kernels, which qsim does not
reproduce; ``"auto"`` picks ``"avx2"`` there.
"""
from __future__ import annotations

import functools

FAMILIES: tuple[str, ...] = ("avx2", "avx512")
CHOICES: tuple[str, ...] = ("auto",) + FAMILIES

#: one phrase per family, for summaries
DESCRIPTION: dict[str, str] = {"avx2": "AVX2/FMA3 kernels", "avx512": "AVX-512F kernels"}


@functools.lru_cache(maxsize=1)
def host_family() -> str:
    """The family ONNX Runtime's MLAS dispatches on this CPU: ``"avx512"`` when the CPU has
    AVX512F (and the OS saves its registers), else ``"avx2"``."""
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    return "avx512" if features.get("avx512f", False) else "avx2"


def resolve(fp32_kernels: str) -> str:
    """``"auto"`` → :func:`host_family`; ``"avx2"``/``"avx512"`` unchanged; anything else is a
    ``ValueError`` naming the choices."""
    if fp32_kernels == "auto":
        return host_family()
    if fp32_kernels in FAMILIES:
        return fp32_kernels
    raise ValueError(f"fp32_kernels={fp32_kernels!r} is not a kernel family; choose one of "
                     f"{', '.join(repr(c) for c in CHOICES)}")
