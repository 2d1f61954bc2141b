"""The ``qsim`` command (also ``python -m qsim``).

    qsim quantize [MODEL.onnx --calib calib.npz] [options]   calibrate, simulate, export
    qsim inspect MODEL.onnx [--config CFG]                   graph + quantizer placement, with rules
    qsim validate-config CFG                                 every problem, with JSON paths

``qsim quantize`` without a model runs the main job on the bundled example (the digits CNN under
``examples/``) and also reports FP32 and quantized accuracy on its held-out split.
Exit status: 0 on success, 2 on a user error (one line, no traceback unless ``--debug``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import QsimError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUNDLED_MODEL = EXAMPLES / "digits_cnn.onnx"
BUNDLED_DATA = EXAMPLES / "digits.npz"


class UserError(QsimError):
    """A problem with the command line or its files: reported in one line, exit status 2."""


# ---- helpers ---------------------------------------------------------------------------------

def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(Σ ref² / Σ (ref - test)²)`` in dB (inf if equal)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def load_npz(path: Path, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays of ``path`` keyed by graph input name (first axis = samples)."""
    if not path.is_file():
        raise UserError(f"calibration file '{path}' does not exist")
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise UserError(f"'{path}' is not a readable .npz file: {exc}") from None
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise UserError(f"'{path}' has arrays {sorted(arrays)} but the model's inputs are "
                        f"{list(input_names)}: missing {missing}")
    lengths = {n: len(arrays[n]) for n in input_names}
    if len(set(lengths.values())) != 1:
        raise UserError(f"arrays in '{path}' have different numbers of samples: {lengths}")
    return {n: arrays[n] for n in input_names}


def batches_of(data: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Consecutive batches of ``batch_size`` samples (the last one may be shorter), in order."""
    n = len(next(iter(data.values())))
    return [{k: v[i:i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]


def progress(items: list, *, quiet: bool, desc: str, unit_of: Callable[[object], int]) -> Iterator:
    """Iterate with a progress bar (tqdm, if installed and stderr is a terminal)."""
    if quiet or not sys.stderr.isatty():
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    with tqdm(total=sum(unit_of(i) for i in items), desc=desc, unit="sample", file=sys.stderr) as bar:
        for item in items:
            yield item
            bar.update(unit_of(item))


def _cast_feeds(graph, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for info in graph.inputs:
        a = data[info.name]
        if info.dtype is not None and a.dtype != info.dtype:
            if not np.can_cast(a.dtype, info.dtype, casting="same_kind"):
                raise UserError(f"array '{info.name}' has dtype {a.dtype}, the model expects {info.dtype}")
            a = a.astype(info.dtype)
        out[info.name] = a
    return out


# ---- commands --------------------------------------------------------------------------------

def cmd_quantize(args) -> int:
    import qsim
    from .transforms import fold_batch_norms

    bundled = args.model is None
    if bundled:
        if not BUNDLED_MODEL.is_file() or not BUNDLED_DATA.is_file():
            raise UserError(f"the bundled example is not here ({EXAMPLES}); give MODEL.onnx and --calib")
        model_path = BUNDLED_MODEL
        with np.load(BUNDLED_DATA) as d:
            calib_raw = {"input": d["calib_x"]}
            test_x, test_y = d["test_x"], d["test_y"]
    else:
        model_path = Path(args.model)
        if args.calib is None:
            raise UserError("--calib calib.npz is required with a model (one array per graph input)")
    if not model_path.is_file():
        raise UserError(f"model file '{model_path}' does not exist")
    graph = qsim.load_onnx(model_path)
    folds = []
    if not args.no_fold:
        graph, folds = fold_batch_norms(graph)
    calib = _cast_feeds(graph, calib_raw if bundled else load_npz(Path(args.calib), graph.input_names))
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder '{out_dir}': {exc.strerror}") from None

    sim = qsim.QuantizationSimModel(graph, quant_scheme=args.scheme,
                                    param_type=f"int{args.param_bw}",
                                    activation_type=f"int{args.act_bw}",
                                    config_file=args.config, rounding_mode=args.rounding)
    if args.scheme == "percentile":
        sim.set_percentile_value(args.percentile)
    batches = batches_of(calib, args.batch_size)
    t0 = time.perf_counter()
    sim.compute_encodings(progress(batches, quiet=args.quiet, desc="calibrating",
                                   unit_of=lambda b: len(next(iter(b.values())))))
    t_calib = time.perf_counter() - t0
    stem = model_path.stem
    onnx_path, enc_path = sim.export(out_dir, stem, encoding_version=args.encoding_version)
    qdq_path = None
    if args.qdq:
        qdq_path = sim.export_qdq(out_dir / f"{stem}_qdq.onnx")

    n_enabled = len(sim.enabled_quantizers())
    print(f"qsim quantize: {model_path.name}")
    if folds:
        print(f"  batch norms folded:   {len(folds)}")
    print(f"  scheme:               {sim.quant_scheme.value} (w{sim.param_bitwidth}a{sim.activation_bitwidth}, "
          f"config {sim.config.source}, rounding {sim.rounding_mode})")
    print(f"  quantizers enabled:   {n_enabled} of {sum(len(h.spec.tensors) for h in sim._handles.values())}")
    print(f"  calibration:          {len(batches)} batches, {len(next(iter(calib.values())))} samples "
          f"in {t_calib:.2f} s")
    fp32 = qsim.run(graph, calib)
    simulated = sim.run(calib)
    for name in graph.output_names:
        print(f"  SQNR {name} vs FP32:  {sqnr_db(fp32[name], simulated[name]):.2f} dB (calibration data)")
    if bundled:
        _report_bundled(graph, sim, test_x, test_y)
    print(f"  export:               {out_dir}/ ({onnx_path.name}, {enc_path.name}"
          f"{', ' + qdq_path.name if qdq_path else ''})")
    return 0


def _report_bundled(graph, sim, test_x, test_y) -> None:
    """Accuracy of FP32 and simulated model on the held-out split; executor vs ONNX Runtime."""
    import qsim
    feeds = {"input": test_x.astype(np.float32)}
    fp32 = qsim.run(graph, feeds)["logits"]
    quant = sim.run(feeds)["logits"]
    acc = lambda logits: float(np.mean(np.argmax(logits, axis=1) == test_y)) * 100
    print(f"  accuracy FP32:        {acc(fp32):.2f} % on {len(test_y)} held-out digits")
    print(f"  accuracy quantized:   {acc(quant):.2f} %  (agreement with FP32 predictions "
          f"{np.mean(np.argmax(fp32, 1) == np.argmax(quant, 1)) * 100:.2f} %)")
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(qsim.to_onnx(graph).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    print(f"  executor vs ONNX Runtime (FP32): max |diff| {np.max(np.abs(ref - fp32)):.2e}, "
          f"same predictions on {np.mean(np.argmax(ref, 1) == np.argmax(fp32, 1)) * 100:.2f} %")


def cmd_inspect(args) -> int:
    import qsim
    path = Path(args.model)
    if not path.is_file():
        raise UserError(f"model file '{path}' does not exist")
    graph = qsim.load_onnx(path)
    print(f"graph '{graph.name}' (opset {graph.opset}): {len(graph.nodes)} nodes, "
          f"{len(graph.params)} parameters")
    for v in graph.inputs:
        print(f"  input  {v.name}: {v.dtype} {v.shape}")
    for v in graph.outputs:
        print(f"  output {v.name}: {v.dtype} {v.shape}")
    for n in graph.nodes:
        print(f"  {n.name:<28} {n.op_type:<20} {', '.join(n.inputs)} -> {', '.join(n.outputs)}")
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf", param_type=f"int{args.param_bw}",
                                    activation_type=f"int{args.act_bw}", config_file=args.config)
    print()
    print(sim.explain())
    return 0


def cmd_validate_config(args) -> int:
    from .config import validate_config
    problems = validate_config(args.config)
    if not problems:
        print(f"{args.config}: valid")
        return 0
    for path, message in problems:
        print(f"{path}: {message}")
    return 2


# ---- entry point -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="calibrate, simulate and export a model")
    q.add_argument("model", nargs="?", help="FP32 ONNX model (default: the bundled digits CNN)")
    q.add_argument("--calib", help=".npz with one array per graph input, first axis = samples")
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--config", default=None, help="config file or built-in name (default: default)")
    q.add_argument("--scheme", default="tf_enhanced", choices=["tf", "tf_enhanced", "percentile"])
    q.add_argument("--percentile", type=float, default=99.9)
    q.add_argument("--param-bw", type=int, default=8)
    q.add_argument("--act-bw", type=int, default=8)
    q.add_argument("--rounding", default="nearest", choices=["nearest", "half_even"])
    q.add_argument("--out", default="qsim_out")
    q.add_argument("--encoding-version", default="1.0.0", choices=["1.0.0", "0.6.1", "2.0.0"])
    q.add_argument("--qdq", action="store_true", help="also write <stem>_qdq.onnx")
    q.add_argument("--no-fold", action="store_true", help="do not fold batch norms first")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    q.set_defaults(func=cmd_quantize)

    i = sub.add_parser("inspect", help="show the graph and where quantizers go, and why")
    i.add_argument("model")
    i.add_argument("--config", default=None)
    i.add_argument("--param-bw", type=int, default=8)
    i.add_argument("--act-bw", type=int, default=8)
    i.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_inspect)

    v = sub.add_parser("validate-config", help="check a quantsim config file")
    v.add_argument("config")
    v.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    v.set_defaults(func=cmd_validate_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (QsimError, OSError) as exc:
        if args.debug:
            raise
        reason = " ".join(str(exc).split()) if isinstance(exc, QsimError) else str(exc)
        print(f"qsim {args.command}: error: {reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
