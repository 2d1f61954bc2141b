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

MatMulNBits with int8 compute (:mod:`qsim.kernels.nbits_int8`) also depends on VNNI, which MLAS
tests separately (AVX512-VNNI, AVX-VNNI): qsim's ``"avx512"`` means AVX-512 with VNNI there and
``"avx2"`` AVX2 without AVX-VNNI; ``"auto"`` on a CPU of another kind (AVX-512 without VNNI, AVX2
with AVX-VNNI) refuses rather than guess (:func:`nbits_int8`).
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


#: the kernel families whose MatMulNBits int8-compute (CompInt8) kernels qsim reproduces
NBITS_INT8_FAMILIES: tuple[str, ...] = ("avx2", "avx512")


@functools.lru_cache(maxsize=1)
def host_nbits_int8() -> str:
    """The MatMulNBits CompInt8 kernel set MLAS dispatches on this CPU (``platform.cpp``: its
    ``QNBitGemmDispatch``), named by the features it depends on::

        AVX512F+BW+DQ+VL and AVX512-VNNI  -> "avx512"        (vpdpbusd on 512-bit registers)
        AVX512F+BW+DQ+VL, no VNNI         -> "avx512-novnni"
        AVX2 and AVX-VNNI                 -> "avx2-vnni"
        AVX2                              -> "avx2"
    """
    from llvmlite import binding

    f = binding.get_host_cpu_features()
    if all(f.get(x, False) for x in ("avx512f", "avx512bw", "avx512dq", "avx512vl")):
        return "avx512" if f.get("avx512vnni", False) else "avx512-novnni"
    return "avx2-vnni" if f.get("avxvnni", False) else "avx2"


def nbits_int8(fp32_kernels: str) -> str:
    """The CompInt8 family to reproduce for ``fp32_kernels``: ``"auto"`` → the host's
    (:func:`host_nbits_int8`); a named family → itself. ``"avx512"`` stands for AVX-512 *with*
    VNNI (what MLAS runs on every AVX-512 CPU since Cascade Lake / Zen 4), ``"avx2"`` for AVX2
    *without* AVX-VNNI (Haswell to Comet Lake, Zen 1-3). A ``ValueError`` names
    a family whose CompInt8 kernels qsim does not reproduce (their float summation order differs,
    and their bits were never compared)."""
    family = host_nbits_int8() if fp32_kernels == "auto" else resolve(fp32_kernels)
    if family not in NBITS_INT8_FAMILIES:
        where = "this CPU's" if fp32_kernels == "auto" else "the"
        raise ValueError(f"{where} MLAS CompInt8 kernels ({family!r}) are not reproduced; qsim "
                         f"reproduces {', '.join(repr(f) for f in NBITS_INT8_FAMILIES)} "
                         f"(pass fp32_kernels= one of them to get those bits)")
    return family
