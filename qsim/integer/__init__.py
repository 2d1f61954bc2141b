"""Integer arithmetic of quantized targets: :mod:`qsim.integer.fixed_point` (the int32
multiplier-and-shift requantization of gemmlowp / TensorFlow Lite, as DSPs and NPUs run it)."""
