"""The ``qsim`` command (also ``python -m qsim``).

    qsim quantize [MODEL.onnx --calib calib.npz] [options]   calibrate, simulate, export
    qsim analyze  [MODEL.onnx --calib calib.npz] [--eval E.npz] [--labels L.npy] [--out DIR]
                                                             per-quantizer report (HTML + JSON)
    qsim inspect MODEL.onnx [--config CFG]                   graph + quantizer placement, with rules
    qsim validate-config CFG                                 every problem, with JSON paths
    qsim finetune MODEL.onnx --calib C.npz --train T.npz --labels L.npy [--eval E.npz
                  --eval-labels EL.npy] --out DIR            calibrate, QAT, accuracy, export

With ``--from-qdq`` the model of ``quantize`` / ``analyze`` is a QDQ model whose Q/DQ nodes give
the quantizers and encodings (``QuantizationSimModel.from_qdq``; no calibration).
``qsim quantize`` and ``qsim analyze`` without a model run on the bundled example (the digits CNN,
package data under ``qsim/data/``) and also report FP32 and quantized accuracy on its held-out split.
Exit status: 0 on success, 2 on a user error (one line on stderr, no traceback unless ``--debug``),
also when a quantizer's calibration data held ±Inf or only NaN (unless ``--allow-nonfinite``).
No command writes over one of its inputs; every file is written whole or not at all.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import QsimError

EXAMPLES = Path(__file__).resolve().parent / "data"   # package data: also in an installed wheel
BUNDLED_MODEL = EXAMPLES / "digits_cnn.onnx"
BUNDLED_DATA = EXAMPLES / "digits.npz"
#: the oldest default-domain opset ONNX Runtime runs (its compatibility notes: ONNX 1.2.1, opset 7)
OLDEST_OPSET = 7
#: bitwidths the command line accepts (--param-bw, --act-bw)
MIN_BW, MAX_BW = 2, 16


class UserError(QsimError):
    """A problem with the command line or its files: reported in one line, exit status 2."""


# ---- helpers ---------------------------------------------------------------------------------

def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(Σ ref² / Σ (ref - test)²)`` in dB (inf if equal)."""
    from .analyze import tensor_sqnr_db
    return tensor_sqnr_db(reference, test)


def _check_file(path: Path, what: str) -> None:
    """UserError unless ``path`` is an existing, non-empty file."""
    if path.is_dir():
        raise UserError(f"{what} '{path}' is a folder; give a file")
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"{what} '{path}' is empty (0 bytes)")


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, or a UserError naming the file."""
    _check_file(path, what)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise UserError(f"{what} '{path}' holds a single array (.npy); give an .npz archive "
                            f"(numpy.savez) with one array per graph input")
        with data:
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
    _check_file(path, "labels file")
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


def _check_shapes(graph, data: dict[str, np.ndarray], batch: int, source: str) -> None:
    """The first batch of ``batch`` samples must fit the graph inputs (rank and fixed
    dimensions)."""
    from .interpreter import check_feeds
    try:
        check_feeds(graph, {k: v[:batch] for k, v in data.items()})
    except QsimError as exc:
        raise UserError(f"{source} does not fit the model: {exc}") from None


def static_batch(graph) -> int | None:
    """The fixed first dimension of the graph inputs (a model exported without a dynamic batch
    axis), or None when it is dynamic; UserError if inputs disagree."""
    fixed = {v.name: v.shape[0] for v in graph.inputs
             if v.shape and isinstance(v.shape[0], int) and v.shape[0] > 0}
    if len(set(fixed.values())) > 1:
        raise UserError(f"the model's inputs have different fixed batch dimensions {fixed}; "
                        f"qsim cannot cut one calibration set into batches for both")
    return next(iter(fixed.values()), None)


def fit_batches(data: dict[str, np.ndarray], batch: int, source: str, note: Callable[[str], None]
                ) -> dict[str, np.ndarray]:
    """``data`` cut to a whole number of ``batch``-sample batches (a fixed batch dimension);
    the dropped samples are reported through ``note``."""
    n = len(next(iter(data.values())))
    if n < batch:
        raise UserError(f"{source} has {n} samples but the model's batch dimension is fixed at "
                        f"{batch}; give at least {batch} samples (or export the model with a "
                        f"dynamic batch axis)")
    keep = n - n % batch
    if keep != n:
        note(f"{source}: {n} samples is not a multiple of the model's fixed batch size {batch}; "
             f"the last {n - keep} are not used")
    return {k: v[:keep] for k, v in data.items()}


def run_batched(run: Callable[[dict], dict], data: dict[str, np.ndarray], batch: int
                ) -> Iterator[dict[str, np.ndarray]]:
    """``run(feeds)`` on consecutive batches of ``data`` (one output dict per batch)."""
    for feeds in batches_of(data, batch):
        yield run(feeds)


def bitwidth(text: str) -> int:
    """argparse type: an integer bitwidth in 2..16."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of bits {MIN_BW}..{MAX_BW}, "
                                         f"got {text!r}") from None
    if not MIN_BW <= value <= MAX_BW:
        raise argparse.ArgumentTypeError(f"must be {MIN_BW}..{MAX_BW} bits, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _note(command: str) -> Callable[[str], None]:
    """A printer of one-line notes on stderr: ``qsim quantize: note: …``."""
    return lambda text: print(f"qsim {command}: note: {text}", file=sys.stderr)


def _same_file(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` name the same file (through links, relative paths, case)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_not_inputs(written: Sequence[Path], inputs: dict[str, Path]) -> None:
    """UserError, before anything is written, if a file to write is one of the inputs."""
    for out in written:
        for what, path in inputs.items():
            if path is not None and Path(path).exists() and _same_file(out, Path(path)):
                raise UserError(f"the export '{out}' would overwrite the {what} '{path}'; "
                                f"choose another --out folder")


def check_not_inside(folder: Path, inputs: dict[str, Path]) -> None:
    """UserError if an input lies inside ``folder`` (which will be replaced as a whole)."""
    top = os.path.realpath(folder)
    for what, path in inputs.items():
        if path is not None and Path(path).exists():
            real = os.path.realpath(path)
            if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
                raise UserError(f"the {what} '{path}' is inside the output folder '{folder}', "
                                f"which the report replaces; choose another --out folder")


def _input_files(args, job) -> dict[str, Path]:
    """The files a command reads: model, calibration/evaluation data, labels, config."""
    config = getattr(args, "config", None)
    return {"model": job.model_path,
            "calibration file": Path(args.calib) if args.calib else BUNDLED_DATA,
            "evaluation file": Path(args.eval) if getattr(args, "eval", None) else None,
            "labels file": Path(args.labels) if getattr(args, "labels", None) else None,
            "config file": Path(config) if config and Path(config).is_file() else None}


def _check_out_dir(path: Path) -> None:
    """UserError, before any work, if ``path`` cannot become the output folder (it or the
    nearest existing part of it is a file)."""
    part = path
    while not part.exists() and part != part.parent:
        part = part.parent
    if part.exists() and not part.is_dir():
        where = "is a file" if part == path else f"has a file '{part}' in its path"
        raise UserError(f"output folder '{path}' {where}; choose another --out")


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
    batch: int               # calibration batch size: --batch-size, or the model's fixed one
    fixed_batch: int | None  # the model's fixed batch dimension (None: dynamic)
    from_qdq: bool = False   # the sim's quantizers come from the model's Q/DQ nodes


def load_model(path: Path):
    """The ONNX model at ``path`` as a Graph, or a UserError naming what is wrong with it.

    Refused: a folder, an empty file, a file without a graph, an opset older than ONNX Runtime
    supports or newer than the installed ONNX package defines."""
    import qsim
    _check_file(path, "model file")
    graph = qsim.load_onnx(path)
    if not graph.nodes and not graph.outputs:
        raise UserError(f"model file '{path}' holds no graph (0 nodes, no outputs); give an "
                        f"ONNX model file")
    try:
        import onnx.defs
        newest = onnx.defs.onnx_opset_version()
    except ImportError:  # pragma: no cover - load_onnx needs onnx
        newest = None
    if graph.opset < OLDEST_OPSET:
        raise UserError(f"model file '{path}' declares ONNX opset {graph.opset}; ONNX Runtime, "
                        f"which AIMET runs, supports opset {OLDEST_OPSET} and newer: convert it "
                        f"with onnx.version_converter")
    if newest is not None and graph.opset > newest:
        raise UserError(f"model file '{path}' declares ONNX opset {graph.opset}, but the newest "
                        f"opset ONNX defines (onnx {onnx.__version__}) is {newest}; give a model "
                        f"with a real opset")
    return graph


def _check_options(args) -> None:
    """Options that only make sense together: one-line UserErrors before any work."""
    if args.model is None:
        given = [opt for opt, value in (("--calib", args.calib),
                                        ("--eval", getattr(args, "eval", None)),
                                        ("--labels", getattr(args, "labels", None)))
                 if value is not None]
        if given:
            raise UserError(f"{given[0]} needs MODEL.onnx (without a model qsim runs the bundled "
                            f"example on its own data): give the model before the options")
    if getattr(args, "from_qdq", False):
        if args.model is None:
            raise UserError("--from-qdq needs MODEL.onnx, a QDQ model (the bundled example is an "
                            "FP32 model)")
        given = [f"--{name.replace('_', '-')}" for name in getattr(args, "given", [])]
        if given:
            one = len(given) == 1
            raise UserError(f"--from-qdq reads the quantizers and encodings from the model's "
                            f"Q/DQ nodes: {', '.join(given)} {'does' if one else 'do'} not "
                            f"apply; drop {'it' if one else 'them'}")
    if args.percentile is not None and args.scheme != "percentile":
        raise UserError(f"--percentile {args.percentile:g} needs --scheme percentile (the scheme "
                        f"is {args.scheme})")


def _check_labels(graph, labels: np.ndarray, path: str) -> None:
    """Labels must be class indices of the first output: 0 ≤ label < its dimension 1 (the axis
    accuracy takes the argmax over) when that is fixed; :func:`qsim.analyze.accuracy_percent`
    checks again on the logits."""
    lo, hi = int(labels.min(initial=0)), int(labels.max(initial=0))
    shape = graph.outputs[0].shape if graph.outputs else None
    classes = shape[1] if shape and len(shape) >= 2 and isinstance(shape[1], int) else None
    if lo < 0 or (classes is not None and hi >= classes):
        bad = lo if lo < 0 else hi
        top = f"{classes - 1}" if classes is not None else "the number of classes - 1"
        raise UserError(f"labels file '{path}' holds label {bad}, but the model's output "
                        f"'{graph.outputs[0].name}' has classes 0..{top}")


def load_job(args, *, with_eval: bool, note: Callable[[str], None]) -> Job:
    """Check the files of the command line and load model, calibration (and evaluation) data."""
    from .transforms import fold_batch_norms

    _check_options(args)
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
        _check_file(model_path, "model file")
        if args.calib is None:
            raise UserError("--calib calib.npz is required with a model (one array per graph input)")
        _check_file(Path(args.calib), "calibration file")
    graph = load_model(model_path)
    folds = []
    from_qdq = getattr(args, "from_qdq", False)
    if not args.no_fold and not from_qdq:
        graph, folds = fold_batch_norms(graph)
    if not bundled:
        calib_raw = load_npz(Path(args.calib), graph.input_names)
    source = f"calibration file '{args.calib or BUNDLED_DATA}'"
    calib = _cast_feeds(graph, calib_raw, f"'{args.calib or BUNDLED_DATA}'")
    fixed = static_batch(graph)
    batch = args.batch_size if fixed is None else fixed
    if fixed is not None:
        if args.batch_size != fixed and args.batch_size_given:
            note(f"the model's batch dimension is fixed at {fixed}: calibrating in batches of "
                 f"{fixed}, not --batch-size {args.batch_size}")
        calib = fit_batches(calib, fixed, source, note)
    _check_shapes(graph, calib, batch, source)
    if with_eval and not bundled:
        if args.eval is not None:
            raw = load_npz(Path(args.eval), graph.input_names, "evaluation file")
            eval_data = _cast_feeds(graph, raw, f"'{args.eval}'")
            _check_shapes(graph, eval_data, batch, f"evaluation file '{args.eval}'")
        if args.labels is not None:
            labels = load_labels(Path(args.labels))
            n = len(next(iter((eval_data or calib).values())))
            if eval_data is None and fixed is not None:
                n = len(next(iter(calib_raw.values())))  # the labels match the file, not the cut
            if len(labels) != n:
                which = "--eval" if eval_data is not None else "--calib (no --eval given)"
                raise UserError(f"'{args.labels}' has {len(labels)} labels but {which} has {n} "
                                f"samples; give one label per sample")
            _check_labels(graph, labels, args.labels)
        if fixed is not None and eval_data is not None:
            eval_data = fit_batches(eval_data, fixed, f"evaluation file '{args.eval}'", note)
        if labels is not None and fixed is not None:
            labels = labels[:len(next(iter((eval_data or calib).values())))]
    return Job(model_path=model_path, graph=graph, folds=folds, calib=calib,
               eval_data=eval_data, labels=labels, bundled=bundled, batch=batch,
               fixed_batch=fixed, from_qdq=from_qdq)


def nonfinite_error(sim, allow: bool, note: Callable[[str], None]) -> None:
    """The CLI's non-finite policy: a UserError naming every quantizer whose calibration data
    held ±Inf or only NaN, or (``--allow-nonfinite``) one note saying the same."""
    bad = sim.nonfinite_quantizers()
    if not bad:
        return
    listed = ", ".join(f"'{t}' ({why})" for t, why in list(bad.items())[:8])
    more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
    text = f"{len(bad)} quantizer(s) saw non-finite calibration data: {listed}{more}"
    if allow:
        note(f"{text}; their encodings are not meaningful (--allow-nonfinite)")
        return
    raise UserError(f"{text}; their encodings would not be meaningful: give finite data, or "
                    f"--allow-nonfinite to go on (an export still refuses NaN, infinite or "
                    f"non-positive scales)")


def build_sim(args, job: Job, note: Callable[[str], None]):
    """The QuantizationSimModel of the command-line options, calibrated with a progress bar.

    Warnings of the calibration are collected: quantizers whose data mixed NaN with finite
    values (ignored, as AIMET does) get one note here; ±Inf and only-NaN ones are the caller's
    (:func:`nonfinite_error`)."""
    import qsim
    if getattr(args, "from_qdq", False):
        sim = qsim.QuantizationSimModel.from_qdq(job.graph, rounding_mode=args.rounding,
                                                 fp32_kernels=args.fp32_kernels)
        return sim, 0
    sim = qsim.QuantizationSimModel(job.graph, quant_scheme=args.scheme,
                                    param_type=f"int{args.param_bw}",
                                    activation_type=f"int{args.act_bw}",
                                    config_file=args.config, rounding_mode=args.rounding,
                                    fp32_kernels=args.fp32_kernels)
    if args.scheme == "percentile":
        sim.set_percentile_value(99.9 if args.percentile is None else args.percentile)
    batches = batches_of(job.calib, job.batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if getattr(args, "workers", None) or getattr(args, "scheduler", None):
            _calibrate_on_cluster(args, sim, job.calib, job.batch, len(batches))
        else:
            sim.compute_encodings(progress(batches, quiet=args.quiet, desc="calibrating",
                                           unit_of=lambda b: len(next(iter(b.values())))))
    ignored = [str(w.message).split(":")[0].removeprefix("quantizer of ") for w in caught
               if w.category is RuntimeWarning and "NaN values are ignored" in str(w.message)]
    if ignored:
        note(f"the calibration data of {len(ignored)} quantizer(s) held NaN, ignored as AIMET "
             f"does: {', '.join(ignored[:8])}{' …' if len(ignored) > 8 else ''}")
    return sim, len(batches)


def _calibrate_on_cluster(args, sim, calib: dict[str, np.ndarray], batch: int,
                          n_batches: int) -> None:
    """--workers N (a LocalCluster) or --scheduler ADDRESS: the same batches on Dask, one chunk
    per batch of ``batch`` samples; the progress bar advances as the batches' futures
    complete."""
    try:
        import dask.array as da
        from . import distributed as qd
    except ImportError:
        raise UserError("--workers/--scheduler need Dask: pip install 'qsim-ref[distributed]'") from None
    data = {k: da.from_array(v, chunks=(batch,) + v.shape[1:]) for k, v in calib.items()}
    bar = progress(range(n_batches), quiet=args.quiet, desc="calibrating", unit="batch")
    with qd.cluster(args.scheduler, workers=args.workers, timeout=5) as client:
        qd.compute_encodings(sim, data, client, batch_size=batch,
                             progress=lambda done, total: next(bar, None))
    for _ in bar:
        pass


def _describe_sim(sim, job: Job) -> list[str]:
    handles = {id(h): h for h in sim.quantizers.values()}
    lines = [f"qsim: {job.model_path.name}" + ("  (the bundled example)" if job.bundled else "")]
    if job.folds:
        lines.append(f"  batch norms folded:   {len(job.folds)}")
    if job.from_qdq:
        lines.append(f"  encodings:            read from the model's Q/DQ nodes (mostly "
                     f"w{sim.param_bitwidth}a{sim.activation_bitwidth}, rounding "
                     f"{sim.rounding_mode})")
    else:
        lines.append(f"  scheme:               {sim.quant_scheme.value} (w{sim.param_bitwidth}"
                     f"a{sim.activation_bitwidth}, config {sim.config.source}, rounding "
                     f"{sim.rounding_mode})")
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

def _output_sqnr(sim, data: dict[str, np.ndarray], batch: int) -> dict[str, float]:
    """SQNR in dB of every output of the simulated model against FP32, batch by batch:
    ``10·log10(Σ ref² / Σ (ref - sim)²)`` over all samples."""
    import qsim
    from .analyze import sqnr_db as sqnr_of_powers
    signal = dict.fromkeys(sim.graph.output_names, 0.0)
    noise = dict.fromkeys(sim.graph.output_names, 0.0)
    for feeds in batches_of(data, batch):
        fp32 = qsim.run(sim.graph, feeds, fp32_kernels=sim.fp32_kernels)
        simulated = sim.run(feeds)
        for name in signal:
            ref = np.asarray(fp32[name], np.float64)
            signal[name] += float(np.sum(ref ** 2))
            noise[name] += float(np.sum((ref - np.asarray(simulated[name], np.float64)) ** 2))
    return {name: sqnr_of_powers(signal[name], noise[name]) for name in signal}


def cmd_quantize(args) -> int:
    note = _note("quantize")
    job = load_job(args, with_eval=False, note=note)
    out_dir = Path(args.out)
    stem = job.model_path.stem
    targets = [out_dir / f"{stem}.onnx", out_dir / f"{stem}.encodings"]
    if args.qdq:
        targets.append(out_dir / f"{stem}_qdq.onnx")
    check_not_inputs(targets, _input_files(args, job))
    _check_out_dir(out_dir)
    t0 = time.perf_counter()
    sim, n_batches = build_sim(args, job, note)
    t_calib = time.perf_counter() - t0
    nonfinite_error(sim, args.allow_nonfinite, note)
    # everything that can refuse (bad scales, QDQ types), before the first file is written
    from .export import dumps_encodings, encodings_document
    dumps_encodings(encodings_document(sim, args.encoding_version))
    if args.qdq:
        from .qdq import qdq_model
        qdq_bytes = qdq_model(sim).SerializeToString()
    _make_out_dir(out_dir)
    onnx_path, enc_path = sim.export(out_dir, stem, encoding_version=args.encoding_version)
    written = [onnx_path.name, enc_path.name]
    if args.qdq:
        from .export import write_atomic
        written.append(write_atomic(targets[2], qdq_bytes).name)

    lines = _describe_sim(sim, job)
    n = len(next(iter(job.calib.values())))
    fixed = f" of {job.fixed_batch} (the model's fixed batch size)" if job.fixed_batch else ""
    if not job.from_qdq:
        lines.append(f"  calibration:          {n_batches} batches{fixed}, {n} samples in "
                     f"{t_calib:.2f} s ({n / max(t_calib, 1e-9):.0f} samples/s)")
    for name, db in _output_sqnr(sim, job.calib, job.batch).items():
        lines.append(f"  SQNR {name} vs FP32:  {db:.2f} dB (calibration data)")
    if job.bundled:
        lines += _bundled_accuracy(sim, job)
    if args.qdq:
        lines.append(_target_gap_line(sim, job))
    lines.append(f"  export:               {out_dir.resolve()}/ ({', '.join(written)})")
    print("\n".join(lines))
    return 0


def _target_gap_line(sim, job: Job) -> str:
    """What ONNX Runtime's default session computes for the QDQ export vs the simulation, on
    the graph outputs over the calibration data (qsim.integer.gap), in one line."""
    from .errors import QsimError
    from .integer import gap_over
    try:
        model = sim.to_integer("onnxruntime")
        report = gap_over(sim, model, batches_of(job.calib, job.batch))
    except QsimError as exc:
        return f"  sim vs ONNX Runtime on the QDQ export: not predicted ({exc})"
    outs = [t for t in report.tensors if t.tensor in sim.graph.output_names]
    if not outs:
        return "  sim vs ONNX Runtime on the QDQ export: the outputs are not quantized"
    total, same = sum(t.size for t in outs), sum(t.counts[0] for t in outs)
    worst = max(t.max_lsb for t in outs)
    return (f"  sim vs ONNX Runtime (default session) on the QDQ export: outputs {same} of "
            f"{total} values identical, max {worst} LSB; first tensor that differs: "
            f"{report.first or 'none'}")


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
    from .analyze import WORST, analyze, check_report_folder, replace_report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("qsim analyze draws its plots with matplotlib: "
                        "pip install 'qsim-ref[analyze]'") from None
    note = _note("analyze")
    job = load_job(args, with_eval=True, note=note)
    out_dir = Path(args.out)
    check_not_inside(out_dir, _input_files(args, job))
    check_report_folder(out_dir)
    sim, _ = build_sim(args, job, note)
    nonfinite_error(sim, args.allow_nonfinite, note)

    def bar(items, desc):
        return progress(items, quiet=args.quiet, desc=desc, unit="step")

    eval_batch = job.fixed_batch or max(job.batch, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # inf - inf in SQNRs of non-finite data
        result = analyze(sim, job.calib, eval_data=job.eval_data, labels=job.labels,
                         batch_size=job.batch, eval_batch_size=eval_batch,
                         model_name=job.model_path.name,
                         progress=bar, target=args.target)
        files = replace_report(result, out_dir)
    lines = _describe_sim(sim, job)
    u = result.unit
    lines.append(f"  {result.metric + ' FP32:':<21} {result.fp32:.2f} {u}")
    lines.append(f"  {result.metric + ' quantized:':<21} {result.quantized:.2f} {u}")
    lines.append(f"  costliest quantizers (metric with only that one disabled):")
    for q in result.ranked()[:WORST]:
        lines.append(f"    {q.only_disabled:8.2f} {u}  {q.name}  (SQNR alone {q.sqnr_alone_db:.1f} dB, "
                     f"{q.clipped_fraction:.2%} clipped)")
    if result.target is not None:
        g = result.gap
        total = sum(t.size for t in g.tensors)
        same = sum(t.counts[0] for t in g.tensors)
        lines.append(f"  {result.metric + ' ' + result.target + ':':<21} "
                     f"{result.target_metric:.2f} {u} (the integer model)")
        lines.append(f"  sim vs {result.target}: {same} of {total} quantized values identical, "
                     f"max {max((t.max_lsb for t in g.tensors), default=0)} LSB; first tensor "
                     f"that differs: {g.first or 'none'}")
    lines.append(f"  report:               {files.html.resolve()}")
    lines.append(f"  numbers:              {files.json.resolve()}")
    print("\n".join(lines))
    return 0


def cmd_inspect(args) -> int:
    import qsim
    from .transforms import fold_batch_norms
    graph = load_model(Path(args.model))
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


def _op_type_keys(doc) -> list[str]:
    op_types = doc.get("op_type") if isinstance(doc, dict) else None
    return list(op_types) if isinstance(op_types, dict) else []


def unknown_op_types(config) -> list[tuple[str, str]]:
    """``(json path, message)`` for each ``op_type`` key that is neither an ONNX operator (of the
    installed ``onnx`` package's default domain) nor one AIMET's own configs name (the built-in
    ones: ``ChannelShuffle`` in htp_v75); case mistakes name the right spelling."""
    import json
    from .config.load import _builtin_text, available_configs
    try:
        import onnx.defs
    except ImportError:  # without onnx there is no list to check against
        return []
    path = Path(config)
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []                   # validate_config reports unreadable files
    known = {s.name for s in onnx.defs.get_all_schemas() if s.domain in ("", "ai.onnx")}
    for name in available_configs():
        known.update(_op_type_keys(json.loads(_builtin_text(name))))
    by_lower = {k.lower(): k for k in known}
    out = []
    for name in _op_type_keys(doc):
        if name in known:
            continue
        hint = (f"did you mean '{by_lower[name.lower()]}'? (op types are case-sensitive)"
                if name.lower() in by_lower else "not an ONNX operator type")
        out.append((f"op_type.{name}", f"'{name}': {hint}"))
    return out


def cmd_validate_config(args) -> int:
    from .config import validate_config
    problems = validate_config(args.config)
    if not problems:
        problems = unknown_op_types(args.config)
    if not problems:
        print(f"{args.config}: valid")
        return 0
    for path, message in problems:
        print(f"{path}: {message}")
    print(f"qsim validate-config: {args.config}: {len(problems)} problem(s)", file=sys.stderr)
    return 2


# ---- finetune ----------------------------------------------------------------------------------

#: --scheme choices of qsim finetune: AIMET's four QAT scheme names and the short post-training ones
FINETUNE_SCHEMES = ("training_range_learning_with_tf_init",
                    "training_range_learning_with_tf_enhanced_init",
                    "post_training_tf", "post_training_tf_enhanced", "tf", "tf_enhanced")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


@dataclass
class TrainJob:
    """What finetune works on, on top of :class:`Job`: the labelled training (and evaluation)
    data."""

    job: Job
    train: dict
    train_labels: np.ndarray
    eval_data: dict | None
    eval_labels: np.ndarray | None


def _labelled(graph, data_path: str, labels_path: str, what: str, batch: int,
              fixed: int | None, note) -> tuple[dict, np.ndarray]:
    """One ``(feeds, labels)`` pair of files: the same number of samples in both, labels that
    are class indices of the model's first output."""
    raw = load_npz(Path(data_path), graph.input_names, f"{what} file")
    data = _cast_feeds(graph, raw, f"'{data_path}'")
    _check_shapes(graph, data, batch, f"{what} file '{data_path}'")
    labels = load_labels(Path(labels_path))
    n = len(next(iter(data.values())))
    if len(labels) != n:
        raise UserError(f"'{labels_path}' has {len(labels)} labels but the {what} file "
                        f"'{data_path}' has {n} samples; give one label per sample")
    _check_labels(graph, labels, labels_path)
    if fixed is not None:
        data = fit_batches(data, fixed, f"{what} file '{data_path}'", note)
        labels = labels[:len(next(iter(data.values())))]
    return data, labels


def load_train_job(args, note) -> TrainJob:
    """Check every file of ``qsim finetune`` and load them, before any work."""
    if (args.eval is None) != (args.eval_labels is None):
        given, missing = (("--eval", "--eval-labels") if args.eval is not None
                          else ("--eval-labels", "--eval"))
        raise UserError(f"{given} needs {missing} (accuracy is measured on labelled data)")
    for path, what in ((args.train, "training file"), (args.labels, "labels file"),
                       (args.eval, "evaluation file"), (args.eval_labels, "labels file")):
        if path is not None:
            _check_file(Path(path), what)
    job = load_job(args, with_eval=False, note=note)
    train, labels = _labelled(job.graph, args.train, args.labels, "training", job.batch,
                              job.fixed_batch, note)
    ev = ev_labels = None
    if args.eval is not None:
        ev, ev_labels = _labelled(job.graph, args.eval, args.eval_labels, "evaluation",
                                  job.batch, job.fixed_batch, note)
    return TrainJob(job=job, train=train, train_labels=labels, eval_data=ev, eval_labels=ev_labels)


def _check_classes(sim, tj: TrainJob) -> None:
    """Labels below the number of classes the model really outputs (its dimension 1 may be
    dynamic in the file): one FP32 forward of one sample decides."""
    import qsim
    one = {k: v[:tj.job.fixed_batch or 1] for k, v in tj.train.items()}
    out = qsim.run(sim.graph, one, fp32_kernels=sim.fp32_kernels)[sim.graph.output_names[0]]
    if out.ndim != 2:
        raise UserError(f"qsim finetune trains classifiers: the model's output "
                        f"'{sim.graph.output_names[0]}' has shape {out.shape}, expected "
                        f"(batch, classes) logits")
    for labels, path in ((tj.train_labels, "--labels"), (tj.eval_labels, "--eval-labels")):
        if labels is not None and labels.size and labels.max() >= out.shape[1]:
            raise UserError(f"{path} holds label {int(labels.max())}, but the model's output "
                            f"'{sim.graph.output_names[0]}' has classes 0..{out.shape[1] - 1}")


def epoch_batches(data: dict, labels: np.ndarray, batch: int, epochs: int, seed: int,
                  fixed: bool) -> list[tuple[dict, np.ndarray]]:
    """``epochs`` passes over the training data, each in a new random order
    (``numpy.random.default_rng(seed)``), cut into ``(feeds, labels)`` batches of ``batch``
    samples; the last one of a pass is shorter unless the model's batch is ``fixed``."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    stop = n - n % batch if fixed else n
    out = []
    for _ in range(epochs):
        order = rng.permutation(n)
        out += [({k: v[order[i:i + batch]] for k, v in data.items()}, labels[order[i:i + batch]])
                for i in range(0, stop, batch)]
    return out


def _accuracy(run, data: dict, labels: np.ndarray, batch: int, output: str) -> float:
    """Top-1 accuracy in % of ``run(feeds)[output]`` over ``data``, batch by batch."""
    from .analyze import accuracy_percent
    logits = np.concatenate([run(feeds)[output] for feeds in batches_of(data, batch)])
    return accuracy_percent(logits, labels)


def _export_swap(sim, out_dir: Path, stem: str, encoding_version: str) -> list[str]:
    """Export into a temporary folder inside ``out_dir``, then move each file into place: a
    failed export leaves ``out_dir`` as it was (and removes it if it made it)."""
    import shutil
    import tempfile
    created = not out_dir.exists()
    _make_out_dir(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".qsim-finetune-", dir=out_dir))
    try:
        files = sim.export(tmp, stem, encoding_version=encoding_version)
        for f in files:
            os.replace(f, out_dir / f.name)
        return [f.name for f in files]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cmd_finetune(args) -> int:
    import qsim.train
    from .train import sim_api
    note = _note("finetune")
    tj = load_train_job(args, note)
    job = tj.job
    out_dir = Path(args.out)
    stem = job.model_path.stem
    inputs = {**_input_files(args, job), "training file": Path(args.train),
              "evaluation labels file": Path(args.eval_labels) if args.eval_labels else None}
    check_not_inputs([out_dir / f"{stem}.onnx", out_dir / f"{stem}.encodings"], inputs)
    _check_out_dir(out_dir)
    sim, _ = build_sim(args, job, note)
    nonfinite_error(sim, args.allow_nonfinite, note)
    _check_classes(sim, tj)
    output = sim.graph.output_names[0]
    eval_batch = job.fixed_batch or max(job.batch, 256)

    lines = _describe_sim(sim, job)
    at = next(i for i, text in enumerate(lines) if text.lstrip().startswith("scheme:")) + 1
    lines[at:at] = [f"  fine-tuning:          {args.epochs} epoch(s) of {len(tj.train_labels)} "
                  f"samples, batch {job.batch}, {args.optimizer} lr {args.lr:g}, ranges "
                  f"{'learned' if sim_api.range_learning(sim) else 'fixed (parameter ranges follow the weights)'}"]
    if tj.eval_data is not None:
        fp32 = _accuracy(lambda f: qsim.run(sim.graph, f, fp32_kernels=sim.fp32_kernels),
                         tj.eval_data, tj.eval_labels, eval_batch, output)
        before = _accuracy(sim.run, tj.eval_data, tj.eval_labels, eval_batch, output)
    batches = epoch_batches(tj.train, tj.train_labels, job.batch, args.epochs, args.seed,
                            job.fixed_batch is not None)
    optimizer = (qsim.train.Adam(lr=args.lr) if args.optimizer == "adam"
                 else qsim.train.SGD(lr=args.lr, momentum=args.momentum))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # overflow: a diverging run, caught below
        losses = sim_api.fit(sim, batches, qsim.train.cross_entropy, optimizer, epochs=1,
                             progress=not args.quiet and sys.stderr.isatty())
    t_train = time.perf_counter() - t0
    bad = next((i for i, v in enumerate(losses) if not np.isfinite(v)), None)
    if bad is not None:
        raise UserError(f"training diverged: the loss became {losses[bad]} at step {bad + 1}; "
                        f"try a smaller --lr (now {args.lr:g}); nothing was written")
    per_epoch = len(batches) // args.epochs
    first, last = np.mean(losses[:per_epoch]), np.mean(losses[-per_epoch:])
    lines.append(f"  training:             {len(batches)} steps in {t_train:.2f} s; mean loss "
                 f"{first:.4f} (epoch 1) -> {last:.4f} (epoch {args.epochs})")
    if tj.eval_data is not None:
        after = _accuracy(sim.run, tj.eval_data, tj.eval_labels, eval_batch, output)
        n = len(tj.eval_labels)
        lines += [f"  accuracy FP32:        {fp32:.2f} % on {n} evaluation samples",
                  f"  accuracy calibrated:  {before:.2f} %",
                  f"  accuracy fine-tuned:  {after:.2f} %"]
    # everything that can refuse (bad scales), before the first file is written
    from .export import dumps_encodings, encodings_document
    dumps_encodings(encodings_document(sim, args.encoding_version))
    written = _export_swap(sim, out_dir, stem, args.encoding_version)
    lines.append(f"  export:               {out_dir.resolve()}/ ({', '.join(written)})")
    print("\n".join(lines))
    return 0


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
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="calibration batch size (default 16; a model with a fixed batch "
                        "dimension is calibrated in batches of that size)")
    p.add_argument("--config", default=None, help="config file or built-in name (default: default)")
    p.add_argument("--from-qdq", action="store_true",
                   help="MODEL is a QDQ model (ONNX Runtime's quantizer's, qsim's --qdq export, "
                        "...): read its quantizers and encodings from its Q/DQ nodes instead of "
                        "placing and calibrating them (rounding half_even)")
    p.add_argument("--scheme", default=None, choices=["tf", "tf_enhanced", "percentile"],
                   help="calibration scheme: min-max, AIMET's SQNR search (default) or percentile")
    p.add_argument("--percentile", type=float, default=None,
                   help="percentile for --scheme percentile, 50..100 (default 99.9)")
    p.add_argument("--param-bw", type=bitwidth, default=None, help="weight bitwidth, 2..16 (default 8)")
    p.add_argument("--act-bw", type=bitwidth, default=None, help="activation bitwidth, 2..16 (default 8)")
    p.add_argument("--rounding", default=None, choices=["nearest", "half_even"],
                   help="nearest = AIMET (ties away from zero, default); half_even = ONNX "
                        "QuantizeLinear (the default with --from-qdq)")
    _add_family_option(p)
    p.add_argument("--out", default=out_default, help=f"output folder (default {out_default})")
    p.add_argument("--no-fold", action="store_true", help="do not fold batch norms first")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="go on when a quantizer's calibration data held ±Inf or only NaN "
                        "(default: exit 2 naming them); exports still refuse non-finite scales")
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
    parser.add_argument("--version", action="version", version=f"qsim {_version()}")
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
    a.add_argument("--target", choices=["onnxruntime", "fixed_point"], default=None,
                   help="also run the integer model (what ONNX Runtime's default session "
                        "computes for the QDQ export, or a fixed-point target) and report, per "
                        "quantized tensor, its distance from the simulation in LSB")
    a.set_defaults(func=cmd_analyze)

    f = sub.add_parser("finetune", help="calibrate, fine-tune with quantization-aware training, "
                                        "export")
    f.add_argument("model", help="FP32 ONNX classifier (first output: logits, batch × classes)")
    f.add_argument("--calib", required=True,
                   help=".npz with one array per graph input, first axis = samples")
    f.add_argument("--train", required=True, help=".npz training data (one array per input)")
    f.add_argument("--labels", required=True,
                   help=".npy integer labels of the training samples (one per sample)")
    f.add_argument("--eval", help=".npz evaluation data: accuracy before and after training")
    f.add_argument("--eval-labels", help=".npy integer labels of the evaluation samples")
    f.add_argument("--epochs", type=positive_int, default=1, help="passes over --train (default 1)")
    f.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (default 1e-3)")
    f.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                   help="Adam (default) or SGD, as torch.optim computes them")
    f.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    f.add_argument("--seed", type=int, default=0, help="seed of the shuffling (default 0)")
    f.add_argument("--scheme", default="training_range_learning_with_tf_init",
                   choices=FINETUNE_SCHEMES,
                   help="training_range_learning_* learn every quantizer range (default "
                        "training_range_learning_with_tf_init); post_training_*/tf/tf_enhanced "
                        "keep activation ranges fixed and recompute weight ranges from the weights")
    f.add_argument("--config", default=None, help="config file or built-in name (default: default)")
    f.add_argument("--batch-size", type=positive_int, default=None,
                   help="calibration and training batch size (default 16; a model with a fixed "
                        "batch dimension uses that)")
    f.add_argument("--param-bw", type=bitwidth, default=8, help="weight bitwidth, 2..16 (default 8)")
    f.add_argument("--act-bw", type=bitwidth, default=8, help="activation bitwidth, 2..16 (default 8)")
    f.add_argument("--encoding-version", default="1.0.0", choices=["1.0.0", "0.6.1", "2.0.0"],
                   help="format of <stem>.encodings (default 1.0.0)")
    _add_family_option(f)
    f.add_argument("--out", required=True, help="output folder (its other files are kept)")
    f.add_argument("--no-fold", action="store_true", help="do not fold batch norms first")
    f.add_argument("--allow-nonfinite", action="store_true",
                   help="go on when a quantizer's calibration data held ±Inf or only NaN")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")
    f.set_defaults(func=cmd_finetune, percentile=None, rounding="nearest")

    i = sub.add_parser("inspect", help="show the graph and where quantizers go, and why")
    i.add_argument("model")
    i.add_argument("--config", default=None)
    i.add_argument("--param-bw", type=bitwidth, default=8)
    i.add_argument("--act-bw", type=bitwidth, default=8)
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


#: options of quantize/analyze whose default is filled in after parsing, so that the options
#: given on the command line are known (--from-qdq refuses the calibration ones)
SIM_DEFAULTS = {"config": None, "scheme": "tf_enhanced", "percentile": None, "param_bw": 8,
                "act_bw": 8, "workers": None, "scheduler": None}


def _fill_sim_defaults(args) -> None:
    """``args.given``: the SIM_DEFAULTS options given; then their defaults, and the rounding's
    (``half_even`` with --from-qdq: what the Q/DQ nodes compute, else AIMET's ``nearest``)."""
    args.given = [name for name in SIM_DEFAULTS if getattr(args, name) is not None]
    for name, value in SIM_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rounding is None:
        args.rounding = "half_even" if args.from_qdq else "nearest"


def _version() -> str:
    from . import __version__
    return f"{__version__} (qsim-ref)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("quantize", "analyze"):
        _fill_sim_defaults(args)
    if hasattr(args, "batch_size"):
        args.batch_size_given = args.batch_size is not None
        if args.batch_size is None:
            args.batch_size = 16
    try:
        code = args.func(args)
        sys.stdout.flush()          # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`qsim inspect m.onnx | head -1`): stop quietly, and keep Python
        # from reporting the pipe again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
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
