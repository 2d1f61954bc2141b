"""ONNX Runtime's float32 arithmetic, bit for bit, in two kernel families.

AIMET computes the float ops of its simulated model with ONNX Runtime's CPU kernels (MLAS and
Eigen). MLAS picks its kernels from the CPU's features when it starts, so the same model gives
other bits on an AVX-512 CPU than on an AVX2-only one. ``qsim/ops`` holds the ONNX semantics of
each op; the arithmetic that must equal ONNX Runtime's lives here:

* :mod:`.family`      which kernel family runs (``"avx2"`` or ``"avx512"``) and how ``"auto"``
                       picks the one ONNX Runtime picks on this CPU;
* :mod:`.gemm`        MLAS SGEMM / Conv summation orders (the same on both families);
* :mod:`.mlas_math`   exp, logistic, tanh, erf, softmax, layer norm, pools, reductions (AVX2/FMA3
                       kernels; the same bits on AVX-512 CPUs except softmax);
* :mod:`.avx512`      the AVX-512F kernels whose bits differ: softmax, and the depthwise
                       multiplier-2 7x7/2 Conv;
* :mod:`.libm`        the C library's pow, which ONNX Runtime's Pow calls per element.
"""
