"""The ``qsim`` command (also ``python -m qsim``).

    qsim quantize [MODEL.onnx --calib calib.npz] [options]   calibrate, simulate, export
    qsim analyze  [MODEL.onnx --calib calib.npz] [--eval E.npz] [--labels L.npy] [--out DIR]
                                                             per-quantizer report (HTML + JSON)
    qsim inspect MODEL.onnx [--config CFG]                   graph + quantizer placement, with rules
    qsim validate-config CFG                                 every problem, with JSON paths

``qsim quantize`` and ``qsim analyze`` without a model run on the bundled example (the digits CNN
under ``examples/``) and also report FP32 and quantized accuracy on its held-out split.
Exit status: 0 on success, 2 on a user error (one line on stderr, no traceback unless ``--debug``).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

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
    from .analyze import tensor_sqnr_db
    return tensor_sqnr_db(reference, test)


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, or a UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise UserError(f"{what} '{path}' holds a single array; give an .npz archive "
                                f"(numpy.savez) with one array per graph input")
            return {k: data[k] for k in data.files}
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{what} '{path}' is not a readable .npz archive (numpy.savez) "
                        f"({type(exc).__name__})") from None


def load_npz(path: Path, input_names: Sequence[str], what: str = "calibration file"
             ) -> dict[str, np.ndarray]:
    """Arrays of ``path`` keyed by graph input name (first axis = samples)."""
    arrays = _read_npz(path, what)
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise UserError(f"{what} '{path}' has arrays {sorted(arrays)} but the model's inputs are "
                        f"{list(input_names)}: missing {missing}")
    lengths = {n: len(arrays[n]) if arrays[n].ndim else 0 for n in input_names}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise UserError(f"arrays in {what} '{path}' need the same, non-zero number of samples "
                        f"(first axis), got {lengths}")
    return {n: arrays[n] for n in input_names}


def load_labels(path: Path) -> np.ndarray:
    """Integer labels from a .npy file, or an .npz with one array (or an array named 'labels')."""
    if not path.is_file():
        raise UserError(f"labels file '{path}' does not exist")
    if path.suffix == ".npz":
        arrays = _read_npz(path, "labels file")
        if "labels" in arrays:
            labels = arrays["labels"]
        elif len(arrays) == 1:
            labels = next(iter(arrays.values()))
        else:
            raise UserError(f"labels file '{path}' has arrays {sorted(arrays)}; name one 'labels'")
    else:
        try:
            labels = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"labels file '{path}' is not a readable .npy array "
                            f"({type(exc).__name__})") from None
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels in '{path}' must be a 1-D integer array (one class per sample), "
                        f"got {labels.dtype} with shape {labels.shape}")
    return labels


def batches_of(data: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Consecutive batches of ``batch_size`` samples (the last one may be shorter), in order."""
    n = len(next(iter(data.values())))
    return [{k: v[i:i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]


def progress(items: Sequence, *, quiet: bool, desc: str,
             unit_of: Callable[[object], int] = lambda item: 1, unit: str = "sample") -> Iterator:
    """Iterate with a progress bar (rate and ETA) when stderr is a terminal and tqdm is installed."""
    if quiet or not sys.stderr.isatty():
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    with tqdm(total=sum(unit_of(i) for i in items), desc=desc, unit=unit, file=sys.stderr,
              leave=False) as bar:
        for item in items:
            yield item
            bar.update(unit_of(item))


def _cast_feeds(graph, data: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Cast arrays to the graph input dtypes where that is safe ('same_kind'), else UserError."""
    out = {}
    for info in graph.inputs:
        a = data[info.name]
        if info.dtype is not None and a.dtype != info.dtype:
            if not np.can_cast(a.dtype, info.dtype, casting="same_kind"):
                raise UserError(f"array '{info.name}' in {source} has dtype {a.dtype}, the model "
                                f"expects {info.dtype}")
            a = a.astype(info.dtype)
        out[info.name] = a
    return out


def _check_shapes(graph, data: dict[str, np.ndarray], source: str) -> None:
    """The first sample batch must fit the graph inputs (rank and fixed dimensions)."""
    from .interpreter import check_feeds
    try:
        check_feeds(graph, data)
    except QsimError as exc:
        raise UserError(f"{source} does not fit the model: {exc}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _make_out_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"output folder '{path}' is a file (or a part of the path is); "
                        f"choose another --out") from None
    except OSError as exc:
        raise UserError(f"cannot create output folder '{path}': {exc.strerror or exc}") from None
    if not path.is_dir():
        raise UserError(f"output folder '{path}' is not a folder; choose another --out")
    return path


# ---- model + data + simulation, shared by quantize and analyze ----------------------------------

@dataclass
class Job:
    """What quantize/analyze work on: the (folded) graph, its data and the bundled-example flag."""

    model_path: Path
    graph: object
    folds: list
    calib: dict
    eval_data: dict | None
    labels: np.ndarray | None
    bundled: bool


def load_job(args, *, with_eval: bool) -> Job:
    """Check the files of the command line and load model, calibration (and evaluation) data."""
    import qsim
    from .transforms import fold_batch_norms

    bundled = args.model is None
    eval_data = labels = None
    if bundled:
        if not BUNDLED_MODEL.is_file() or not BUNDLED_DATA.is_file():
            raise UserError(f"the bundled example is not here ({EXAMPLES}); give MODEL.onnx and --calib")
        model_path = BUNDLED_MODEL
        with np.load(BUNDLED_DATA) as d:
            calib_raw = {"input": d["calib_x"]}
            eval_data, labels = {"input": d["test_x"]}, d["test_y"]
    else:
        model_path = Path(args.model)
        if not model_path.is_file():
            raise UserError(f"model file '{model_path}' does not exist")
        if args.calib is None:
            raise UserError("--calib calib.npz is required with a model (one array per graph input)")
        if not Path(args.calib).is_file():
            raise UserError(f"calibration file '{args.calib}' does not exist")
    graph = qsim.load_onnx(model_path)
    folds = []
    if not args.no_fold:
        graph, folds = fold_batch_norms(graph)
    if not bundled:
        calib_raw = load_npz(Path(args.calib), graph.input_names)
    calib = _cast_feeds(graph, calib_raw, f"'{args.calib or BUNDLED_DATA}'")
    _check_shapes(graph, calib, f"calibration file '{args.calib or BUNDLED_DATA}'")
    if with_eval and not bundled:
        if args.eval is not None:
            raw = load_npz(Path(args.eval), graph.input_names, "evaluation file")
            eval_data = _cast_feeds(graph, raw, f"'{args.eval}'")
            _check_shapes(graph, eval_data, f"evaluation file '{args.eval}'")
        if args.labels is not None:
            labels = load_labels(Path(args.labels))
            n = len(next(iter((eval_data or calib).values())))
            if len(labels) != n:
                which = "--eval" if eval_data is not None else "--calib (no --eval given)"
                raise UserError(f"'{args.labels}' has {len(labels)} labels but {which} has {n} "
                                f"samples; give one label per sample")
    return Job(model_path=model_path, graph=graph, folds=folds, calib=calib,
               eval_data=eval_data, labels=labels, bundled=bundled)


def build_sim(args, job: Job):
    """The QuantizationSimModel of the command-line options, calibrated with a progress bar."""
    import qsim
    sim = qsim.QuantizationSimModel(job.graph, quant_scheme=args.scheme,
                                    param_type=f"int{args.param_bw}",
                                    activation_type=f"int{args.act_bw}",
                                    config_file=args.config, rounding_mode=args.rounding,
                                    fp32_kernels=args.fp32_kernels)
    if args.scheme == "percentile":
        sim.set_percentile_value(args.percentile)
    batches = batches_of(job.calib, args.batch_size)
    if getattr(args, "workers", None) or getattr(args, "scheduler", None):
        _calibrate_on_cluster(args, sim, job.calib, len(batches))
        return sim, len(batches)
    sim.compute_encodings(progress(batches, quiet=args.quiet, desc="calibrating",
                                   unit_of=lambda b: len(next(iter(b.values())))))
    return sim, len(batches)


def _calibrate_on_cluster(args, sim, calib: dict[str, np.ndarray], n_batches: int) -> None:
    """--workers N (a LocalCluster) or --scheduler ADDRESS: the same batches on Dask, one chunk
    per batch; the progress bar advances as the batches' futures complete."""
    try:
        import dask.array as da
        from . import distributed as qd
    except ImportError:
        raise UserError("--workers/--scheduler need Dask: pip install 'qsim-ref[distributed]'") from None
    data = {k: da.from_array(v, chunks=(args.batch_size,) + v.shape[1:]) for k, v in calib.items()}
    bar = progress(range(n_batches), quiet=args.quiet, desc="calibrating", unit="batch")
    with qd.cluster(args.scheduler, workers=args.workers, timeout=5) as client:
        qd.compute_encodings(sim, data, client, batch_size=args.batch_size,
                             progress=lambda done, total: next(bar, None))
    for _ in bar:
        pass


def _describe_sim(sim, job: Job) -> list[str]:
    handles = {id(h): h for h in sim.quantizers.values()}
    lines = [f"qsim: {job.model_path.name}" + ("  (the bundled example)" if job.bundled else "")]
    if job.folds:
        lines.append(f"  batch norms folded:   {len(job.folds)}")
    lines.append(f"  scheme:               {sim.quant_scheme.value} (w{sim.param_bitwidth}"
                 f"a{sim.activation_bitwidth}, config {sim.config.source}, rounding {sim.rounding_mode})")
    lines.append(f"  quantizers enabled:   {len(sim.enabled_quantizers())} of {len(sim.quantizers)} "
                 f"tensors ({sum(h.enabled for h in handles.values())} quantizer objects)")
    lines.append(f"  fp32 kernels:         {_family_text(sim.fp32_kernels)}")
    return lines


def _family_text(family: str) -> str:
    """'avx512 (ONNX Runtime's AVX-512F kernels; this CPU's)' and the like."""
    from .kernels.family import DESCRIPTION, host_family
    mine = "this CPU's" if family == host_family() else f"this CPU runs {host_family()}"
    return f"{family} (ONNX Runtime's {DESCRIPTION[family]}; {mine})"


# ---- commands --------------------------------------------------------------------------------

def cmd_quantize(args) -> int:
    import qsim

    job = load_job(args, with_eval=False)
    out_dir = _make_out_dir(Path(args.out))
    t0 = time.perf_counter()
    sim, n_batches = build_sim(args, job)
    t_calib = time.perf_counter() - t0
    stem = job.model_path.stem
    onnx_path, enc_path = sim.export(out_dir, stem, encoding_version=args.encoding_version)
    written = [onnx_path.name, enc_path.name]
    if args.qdq:
        from .qdq import export_qdq
        written.append(Path(export_qdq(sim, out_dir / f"{stem}_qdq.onnx")).name)

    lines = _describe_sim(sim, job)
    n = len(next(iter(job.calib.values())))
    lines.append(f"  calibration:          {n_batches} batches, {n} samples in {t_calib:.2f} s "
                 f"({n / max(t_calib, 1e-9):.0f} samples/s)")
    fp32 = qsim.run(sim.graph, job.calib, fp32_kernels=sim.fp32_kernels)
    simulated = sim.run(job.calib)
    for name in sim.graph.output_names:
        lines.append(f"  SQNR {name} vs FP32:  {sqnr_db(fp32[name], simulated[name]):.2f} dB "
                     f"(calibration data)")
    if job.bundled:
        lines += _bundled_accuracy(sim, job)
    lines.append(f"  export:               {out_dir.resolve()}/ ({', '.join(written)})")
    print("\n".join(lines))
    return 0


def _bundled_accuracy(sim, job: Job) -> list[str]:
    """Accuracy of FP32 and simulated model on the held-out split; executor vs ONNX Runtime."""
    import qsim
    from .analyze import accuracy_percent
    feeds = job.eval_data
    out = sim.graph.output_names[0]
    fp32 = qsim.run(sim.graph, feeds, fp32_kernels=sim.fp32_kernels)[out]
    quant = sim.run(feeds)[out]
    agree = np.mean(np.argmax(fp32, 1) == np.argmax(quant, 1)) * 100
    lines = [f"  accuracy FP32:        {accuracy_percent(fp32, job.labels):.2f} % on "
             f"{len(job.labels)} held-out digits",
             f"  accuracy quantized:   {accuracy_percent(quant, job.labels):.2f} %  (agreement "
             f"with FP32 predictions {agree:.2f} %)"]
    try:
        import onnxruntime as ort
    except ImportError:
        return lines
    # ONNX Runtime with graph optimizations off computes what AIMET's simulation session does;
    # qsim's executor reproduces it bit for bit with this CPU's kernel family ("auto").
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(qsim.to_onnx(job.graph).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    fp32_graph = qsim.run(job.graph, feeds, fp32_kernels="auto")[out]
    same = int(np.sum(ref == fp32_graph))
    lines.append(f"  executor vs ONNX Runtime (FP32): {same} of {ref.size} logits bit-identical, "
                 f"max |diff| {np.max(np.abs(ref - fp32_graph)):.2e}")
    return lines


def cmd_analyze(args) -> int:
    from .analyze import WORST, analyze, write_report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("qsim analyze draws its plots with matplotlib: "
                        "pip install 'qsim-ref[analyze]'") from None
    job = load_job(args, with_eval=True)
    out_dir = _make_out_dir(Path(args.out))
    sim, _ = build_sim(args, job)

    def bar(items, desc):
        return progress(items, quiet=args.quiet, desc=desc, unit="step")

    result = analyze(sim, job.calib, eval_data=job.eval_data, labels=job.labels,
                     batch_size=args.batch_size, eval_batch_size=max(args.batch_size, 256),
                     model_name=job.model_path.name,
                     progress=bar)
    files = write_report(result, out_dir)
    lines = _describe_sim(sim, job)
    u = result.unit
    lines.append(f"  {result.metric + ' FP32:':<21} {result.fp32:.2f} {u}")
    lines.append(f"  {result.metric + ' quantized:':<21} {result.quantized:.2f} {u}")
    lines.append(f"  costliest quantizers (metric with only that one disabled):")
    for q in result.ranked()[:WORST]:
        lines.append(f"    {q.only_disabled:8.2f} {u}  {q.name}  (SQNR alone {q.sqnr_alone_db:.1f} dB, "
                     f"{q.clipped_fraction:.2%} clipped)")
    lines.append(f"  report:               {files.html.resolve()}")
    lines.append(f"  numbers:              {files.json.resolve()}")
    print("\n".join(lines))
    return 0


def cmd_inspect(args) -> int:
    import qsim
    from .transforms import fold_batch_norms
    path = Path(args.model)
    if not path.is_file():
        raise UserError(f"model file '{path}' does not exist")
    graph = qsim.load_onnx(path)
    folds = []
    if not args.no_fold:
        graph, folds = fold_batch_norms(graph)
    print(f"graph '{graph.name}' (opset {graph.opset}): {len(graph.nodes)} nodes, "
          f"{len(graph.params)} parameters" + (f", {len(folds)} batch norms folded" if folds else ""))
    for v in graph.inputs:
        print(f"  input  {v.name}: {v.dtype} {v.shape}")
    for v in graph.outputs:
        print(f"  output {v.name}: {v.dtype} {v.shape}")
    for n in graph.nodes:
        print(f"  {n.name:<28} {n.op_type:<20} {', '.join(n.inputs)} -> {', '.join(n.outputs)}")
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf", param_type=f"int{args.param_bw}",
                                    activation_type=f"int{args.act_bw}", config_file=args.config,
                                    fp32_kernels=args.fp32_kernels)
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
    print(f"qsim validate-config: {args.config}: {len(problems)} problem(s)", file=sys.stderr)
    return 2


# ---- entry point -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``qsim quantize: error: …``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_family_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fp32-kernels", default="auto", choices=["auto", "avx2", "avx512"],
                   help="whose float32 bits to reproduce: ONNX Runtime's AVX2 or AVX-512 kernels "
                        "(default auto: the family ONNX Runtime picks on this CPU)")


def _add_sim_options(p: argparse.ArgumentParser, *, out_default: str) -> None:
    p.add_argument("model", nargs="?", help="FP32 ONNX model (default: the bundled digits CNN)")
    p.add_argument("--calib", help=".npz with one array per graph input, first axis = samples")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="calibration batch size (default 16)")
    p.add_argument("--config", default=None, help="config file or built-in name (default: default)")
    p.add_argument("--scheme", default="tf_enhanced", choices=["tf", "tf_enhanced", "percentile"],
                   help="calibration scheme: min-max, AIMET's SQNR search (default) or percentile")
    p.add_argument("--percentile", type=float, default=99.9,
                   help="percentile for --scheme percentile, 50..100 (default 99.9)")
    p.add_argument("--param-bw", type=int, default=8, help="weight bitwidth, 2..16 (default 8)")
    p.add_argument("--act-bw", type=int, default=8, help="activation bitwidth, 2..16 (default 8)")
    p.add_argument("--rounding", default="nearest", choices=["nearest", "half_even"],
                   help="nearest = AIMET (ties away from zero, default); half_even = ONNX "
                        "QuantizeLinear")
    _add_family_option(p)
    p.add_argument("--out", default=out_default, help=f"output folder (default {out_default})")
    p.add_argument("--no-fold", action="store_true", help="do not fold batch norms first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, default=None, metavar="N",
                       help="calibrate on a local Dask cluster of N worker processes "
                            "(needs qsim-ref[distributed])")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="calibrate on an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qsim", description="qsim: quantized-inference simulation of ONNX "
                     "models, bit-exact with AIMET. Without MODEL, quantize and analyze run the "
                     "bundled digits CNN example.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    q = sub.add_parser("quantize", help="calibrate, simulate and export a model")
    _add_sim_options(q, out_default="qsim_out")
    q.add_argument("--encoding-version", default="1.0.0", choices=["1.0.0", "0.6.1", "2.0.0"],
                   help="format of <stem>.encodings (default 1.0.0)")
    q.add_argument("--qdq", action="store_true", help="also write <stem>_qdq.onnx")
    q.set_defaults(func=cmd_quantize)

    a = sub.add_parser("analyze", help="per-quantizer SQNR, sweeps, ranges and histograms "
                                       "(HTML report + JSON)")
    _add_sim_options(a, out_default="qsim_analysis")
    a.add_argument("--eval", help=".npz evaluation data (default: the calibration data)")
    a.add_argument("--labels", help=".npy (or .npz) integer labels of the evaluation samples: "
                                    "the metric becomes accuracy (default: output SQNR)")
    a.set_defaults(func=cmd_analyze)

    i = sub.add_parser("inspect", help="show the graph and where quantizers go, and why")
    i.add_argument("model")
    i.add_argument("--config", default=None)
    i.add_argument("--param-bw", type=int, default=8)
    i.add_argument("--act-bw", type=int, default=8)
    i.add_argument("--no-fold", action="store_true", help="do not fold batch norms first")
    _add_family_option(i)
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")
    i.set_defaults(func=cmd_inspect)

    v = sub.add_parser("validate-config", help="check a quantsim config file")
    v.add_argument("config")
    v.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")
    v.set_defaults(func=cmd_validate_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (QsimError, OSError, ImportError) as exc:
        if args.debug:
            raise
        reason = " ".join(str(exc).split())
        print(f"qsim {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qsim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
