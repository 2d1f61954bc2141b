"""Calibration and evaluation on a Dask cluster, bit-identical to one process.

    from dask.distributed import Client
    import qsim.distributed as qd
    client = Client("tcp://scheduler:8786")          # or None: a LocalCluster for the call
    qd.compute_encodings(sim, "calib_shards/", client, batch_size=32)
    acc = qd.evaluate(sim, "val_shards/", client, batch_size=256, metric="accuracy")

``data`` is a list of ``.npz`` paths (one array per graph input, first axis = samples; an extra
``labels`` array for ``metric="accuracy"``), a folder of ``.npz`` files (taken in name order),
or ``{input: dask.array}`` chunked along samples (its chunks are the shards). Each shard is cut
into batches of ``batch_size`` in order (a batch never spans two shards); the batches follow
shard order. Workers read their own batches: the client only reads ``.npz`` headers.

What moves over the network (see the README):

* once per call, to every worker: the model as a :class:`~qsim.sim.CalibrationPass` /
  :class:`~qsim.sim.SimulationPass` (graph, quantize-dequantized weights, encodings);
* per batch, to a worker: the shard path and row range (a few hundred bytes), or for dask arrays
  the chunk slice; the histogram bins known so far are scattered once per change (usually twice);
* per batch, back: the batch's statistics pieces (a min/max pair per channel, or 1536 float64
  per channel for histogram schemes) or the batch's outputs / two float64 per output (SQNR) /
  two integers (accuracy).

Calibration (numerics.md §4, §6): a worker runs the calibration forward of its batch and returns
``[(qid, piece), …]`` (``CalibrationPass.observe_batch``); the client folds the pieces in batch
order with ``TensorQuantizer.fold_stats`` -- the very functions that ``sim.compute_encodings``
runs in one process (``update_stats = fold_stats ∘ observe``), so the encodings are the same bits.
Histogram bins are fixed by the first non-zero batch: batch 0 runs first, then the others under
its bins; a piece counted under bins that an earlier batch turns out to have fixed (a channel
all zero in batch 0) is *stale* and its batch runs again under the bins now known.

Workers must have as many cores as the client: ONNX Runtime's float32 bits depend on its
intra-op thread count (its default: the cores) for some GEMM shapes, and qsim reproduces them;
a worker with another count is a :class:`~qsim.errors.ClusterError` rather than other bits.

Faults: a worker that dies has its batches recomputed by Dask (the model is on every worker); a
shard that cannot be read is a :class:`~qsim.errors.FeedError` naming it; a scheduler that cannot
be reached is a :class:`~qsim.errors.ClusterError` after ``timeout`` seconds.
"""
from __future__ import annotations

import contextlib
import os
import uuid
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .errors import ClusterError, FeedError, NotCalibratedError, QsimError

#: seconds to wait for a scheduler given by address
CONNECT_TIMEOUT = 10.0
#: name of the labels array in a shard (``metric="accuracy"``)
LABELS = "labels"
METRICS = ("accuracy", "sqnr")

Progress = Callable[[int, int], None]


def _dask():
    try:
        import dask.array  # noqa: F401
        import distributed
    except ImportError:
        raise ImportError("qsim.distributed needs Dask: pip install 'qsim-ref[distributed]'") from None
    return distributed


# ============================================================================ data: shards, batches

@dataclass(frozen=True)
class Batch:
    """Rows ``[start, stop)`` of one shard: ``source`` is a ``.npz`` path or a mapping
    ``{name: dask array}`` of the shard; ``shard`` names it in messages."""

    index: int
    shard: str
    start: int
    stop: int
    source: Any


def _array_header(f) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``f`` (left at the data)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _npz_header(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """``{array name: (shape, dtype)}`` of an ``.npz`` from its headers (no data read)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if not member.endswith(".npy"):
                    continue
                with z.open(member) as f:
                    shape, _, dtype = _array_header(f)
                out[member[:-4]] = (shape, dtype)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FeedError(f"shard '{path}' is not a readable .npz file ({exc}); rewrite it with "
                        f"numpy.savez") from None
    return out


def _read_rows(path: str, names: Sequence[str], start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``[start, stop)`` of each named array of an ``.npz``, reading only those rows
    (C order; a Fortran-order array is read whole)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in names:
                with z.open(name + ".npy") as f:
                    shape, fortran, dtype = _array_header(f)
                    if fortran or dtype.hasobject:
                        f.seek(0)
                        out[name] = np.lib.format.read_array(f, allow_pickle=False)[start:stop]
                        continue
                    row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
                    f.seek(f.tell() + start * row)
                    raw = f.read((stop - start) * row)
                    if len(raw) != (stop - start) * row:
                        raise EOFError(f"array '{name}' ends before row {stop}")
                    out[name] = np.frombuffer(raw, dtype).reshape((stop - start,) + tuple(shape[1:]))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise FeedError(f"shard '{path}' cannot be read ({exc}); rewrite it with numpy.savez") from None
    return out


def _npz_shards(paths: Sequence[Path], names: Sequence[str], batch_size: int,
                need_labels: bool) -> list[Batch]:
    batches: list[Batch] = []
    wanted = list(names) + ([LABELS] if need_labels else [])
    for path in paths:
        header = _npz_header(path)
        missing = [n for n in wanted if n not in header]
        if missing:
            raise FeedError(f"shard '{path}' has no array {missing} (it has {sorted(header)}); "
                            f"give one array per graph input {list(names)}"
                            + (f" and '{LABELS}'" if need_labels else ""))
        lengths = {n: header[n][0][0] if header[n][0] else None for n in wanted}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise FeedError(f"shard '{path}': the arrays do not have the same number of samples "
                            f"along the first axis ({lengths})")
        n = next(iter(lengths.values()))
        for a in range(0, n, batch_size):
            batches.append(Batch(len(batches), str(path), a, min(n, a + batch_size), str(path)))
    return batches


def _dask_shards(data: Mapping[str, Any], names: Sequence[str], batch_size: int,
                 need_labels: bool) -> list[Batch]:
    wanted = list(names) + ([LABELS] if need_labels else [])
    missing = [n for n in wanted if n not in data]
    if missing:
        raise FeedError(f"data has no array {missing} (it has {sorted(data)}); give one dask "
                        f"array per graph input {list(names)}"
                        + (f" and '{LABELS}'" if need_labels else ""))
    chunks = {n: tuple(data[n].chunks[0]) for n in wanted}
    first = wanted[0]
    for n in wanted:
        if chunks[n] != chunks[first]:
            raise FeedError(f"dask arrays '{first}' and '{n}' are chunked differently along the "
                            f"samples axis ({chunks[first]} vs {chunks[n]}); rechunk them alike")
    batches: list[Batch] = []
    lo = 0
    for k, size in enumerate(chunks[first]):
        for a in range(0, size, batch_size):
            b = min(size, a + batch_size)
            source = {n: data[n][lo + a:lo + b] for n in wanted}
            batches.append(Batch(len(batches), f"chunk {k} of the dask arrays", a, b, source))
        lo += size
    return batches


def plan_batches(data: Any, input_names: Sequence[str], batch_size: int, *,
                 need_labels: bool = False) -> list[Batch]:
    """The batches of ``data`` in order (see the module docstring); reads only headers."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise QsimError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    batch_size = int(batch_size)
    if isinstance(data, Mapping):
        batches = _dask_shards(data, input_names, batch_size, need_labels)
    else:
        if isinstance(data, (str, os.PathLike)):
            folder = Path(data)
            if not folder.is_dir():
                raise FeedError(f"data '{folder}' is not a folder; give a folder of .npz files, "
                                f"a list of .npz paths or {{input: dask.array}}")
            paths = sorted(folder.glob("*.npz"), key=lambda p: p.name)
            if not paths:
                raise FeedError(f"folder '{folder}' holds no .npz file")
        else:
            paths = [Path(p) for p in data]
        for p in paths:
            if not p.is_file():
                raise FeedError(f"shard '{p}' does not exist")
        batches = _npz_shards(paths, input_names, batch_size, need_labels)
    if not batches:
        raise FeedError("the data holds no sample: every shard is empty")
    return batches


def _load(batch: Batch, names: Sequence[str], arrays) -> dict[str, np.ndarray]:
    """The arrays of ``batch`` (on a worker): npz rows, or the computed dask slices."""
    if isinstance(batch.source, str):
        return _read_rows(batch.source, names, batch.start, batch.stop)
    return {n: np.asarray(arrays[n]) for n in names}


def _where(batch: Batch) -> str:
    return f"batch {batch.index} ({batch.shard}, rows {batch.start}:{batch.stop})"


# ============================================================================ worker tasks

def _feeds(batch: Batch, names: Sequence[str], arrays) -> dict[str, np.ndarray]:
    try:
        return _load(batch, names, arrays)
    except FeedError:
        raise
    except Exception as exc:  # a dask chunk that failed to compute
        raise FeedError(f"{_where(batch)}: {type(exc).__name__}: {exc}") from None


def _intra_op_threads() -> int:
    """The thread count whose float32 bits the kernels reproduce (ONNX Runtime's default
    ``intra_op_num_threads``: this machine's cores; a few GEMM shapes depend on it)."""
    from .kernels import gemm
    return gemm.DEFAULT_THREADS


def _check_threads(expected: int) -> None:
    mine = _intra_op_threads()
    if mine != expected:
        import socket
        raise ClusterError(f"worker {socket.gethostname()} has {mine} cores but the client has "
                           f"{expected}: ONNX Runtime's float32 bits (and qsim's) depend on the "
                           f"core count for some GEMM shapes, so the results would not equal one "
                           f"process on the client; use workers with {expected} cores")


def _calibration_task(cpass, bins: Mapping[int, Any], batch: Batch, arrays=None) -> list:
    """Worker: the statistics pieces of one batch, observed under the known bins."""
    cpass, threads = cpass
    _check_threads(threads)
    feeds = _feeds(batch, cpass.graph.input_names, arrays)
    stats = {qid: b.as_stats() for qid, b in bins.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the client warns when folding
            return cpass.observe_batch(feeds, stats)
    except QsimError as exc:
        raise type(exc)(f"{_where(batch)}: {exc}") from None


def _evaluation_task(spass, metric: str | None, batch: Batch, arrays=None):
    """Worker: one batch's outputs, or its metric pieces."""
    spass, threads = spass
    _check_threads(threads)
    names = list(spass.graph.input_names)
    arrays = _feeds(batch, names + ([LABELS] if metric == "accuracy" else []), arrays)
    feeds = {n: arrays[n] for n in names}
    try:
        got = spass.run(feeds)
        if metric == "accuracy":
            first = spass.graph.output_names[0]
            return int(np.sum(np.argmax(got[first], axis=1) == arrays[LABELS].reshape(-1))), \
                len(arrays[LABELS].reshape(-1))
        if metric == "sqnr":
            ref = spass.run_fp32(feeds)
            pieces = []
            for name in spass.graph.output_names:
                r = np.asarray(ref[name], np.float64)
                pieces.append((float(np.sum(r ** 2)),
                               float(np.sum((r - np.asarray(got[name], np.float64)) ** 2))))
            return pieces
        return got
    except QsimError as exc:
        raise type(exc)(f"{_where(batch)}: {exc}") from None


# ============================================================================ bins known so far

@dataclass(frozen=True, eq=False)
class Bins:
    """The histogram bins of one quantizer known so far (all a worker needs to observe)."""

    axis: int | None
    fixed: np.ndarray
    width: np.ndarray
    k0: np.ndarray

    @staticmethod
    def of(stats) -> "Bins":
        return Bins(stats.axis, stats.fixed, stats.width, stats.k0)

    def as_stats(self):
        """Histogram statistics of no batch with these bins."""
        from .quant.stats import HistogramStats
        empty = HistogramStats.empty(axis=self.axis, channels=self.fixed.shape[0])
        return replace(empty, fixed=self.fixed, width=self.width, k0=self.k0)


def _known_bins(sim) -> dict[int, Bins]:
    from .quant.stats import HistogramStats
    out = {}
    for qid, h in sim._handles.items():
        st = h.quantizer.stats
        if isinstance(st, HistogramStats) and not h.spec.is_param:
            out[qid] = Bins.of(st)
    return out


def _stale(sim, pieces: list) -> bool:
    """True if a histogram piece of the batch was counted under other bins than the ones the
    batches before it fixed (checked piece by piece: tie groups fix bins within a batch)."""
    from .quant.stats import HistogramStats, fold
    current: dict[int, Any] = {}
    for qid, piece in pieces:
        if not isinstance(piece, HistogramStats):
            continue
        st = current[qid] if qid in current else sim._handles[qid].quantizer.stats
        if st is not None and st.stale(piece).any():
            return True
        current[qid] = fold(None if st is None else Bins.of(st).as_stats(), piece)
    return False


# ============================================================================ the cluster

@contextlib.contextmanager
def cluster(client: Any = None, *, workers: int | None = None,
            timeout: float = CONNECT_TIMEOUT) -> Iterator[Any]:
    """A Dask client for one call.

    ``client`` may be a ``distributed.Client`` (used as is), a scheduler address
    (``"tcp://host:8786"``: connected for the call, :class:`ClusterError` after ``timeout``
    seconds if it cannot be reached) or None: a ``LocalCluster`` of ``workers`` processes
    (default one per core) with one thread each, closed afterwards."""
    distributed = _dask()
    if isinstance(client, distributed.Client):
        yield client
        return
    if isinstance(client, str):
        try:
            c = distributed.Client(client, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at '{client}' within {timeout:g} "
                               f"s ({type(exc).__name__}: {' '.join(str(exc).split())}); start "
                               f"one with `dask scheduler` or give --workers N for a local "
                               f"cluster") from None
        with c:
            yield c
        return
    if client is not None:
        raise ClusterError(f"client must be a dask.distributed Client, a scheduler address or "
                           f"None, got {type(client).__name__}")
    n = workers or os.cpu_count() or 1
    with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as lc, distributed.Client(lc) as c:
        yield c


def _submit(client, fn, *args, batch: Batch, name: str):
    """A future of ``fn(*args, batch, arrays)``; a dask-array batch computes its slices on the
    workers as a dependency of the task (lazily: nothing is loaded before it is scheduled).
    Every submission runs (a unique key: a resubmitted batch never reuses its stale twin)."""
    key = f"qsim-{name}-{batch.index}-{uuid.uuid4().hex}"
    if isinstance(batch.source, str):
        return client.submit(fn, *args, batch, key=key, pure=False)
    import dask
    meta = replace(batch, source=None)
    task = dask.delayed(fn, pure=False, name=key)(*args, meta, dict(batch.source))
    return client.compute(task)


# ============================================================================ compute_encodings

def compute_encodings(sim, data: Any, client: Any = None, *, batch_size: int,
                      progress: Progress | None = None, timeout: float = CONNECT_TIMEOUT) -> None:
    """Calibrate ``sim`` on a Dask cluster: the same encodings, bit for bit, as
    ``sim.compute_encodings(batches)`` on the batches of ``data`` in order.

    ``client``: a ``distributed.Client``, a scheduler address, or None (a LocalCluster for the
    call). ``progress(done, total)`` is called as batch results arrive. On any error the sim's
    encodings are left as they were."""
    batches = plan_batches(data, sim.graph.input_names, batch_size)
    with cluster(client, timeout=timeout) as c:
        sim._transaction(lambda: _calibrate(sim, c, batches, progress))


def _calibrate(sim, client, batches: list[Batch], progress: Progress | None) -> None:
    distributed = _dask()
    cpass = sim._begin_calibration()
    [cpass_f] = client.scatter([(cpass, _intra_op_threads())], broadcast=True, hash=False)
    histogram = any(q.scheme != "tf" for q in cpass.quantizers.values())
    total = len(batches)
    futures: dict[Any, int] = {}
    queue = distributed.as_completed()
    bins_f, bins_key = None, None

    def submit(i: int) -> None:
        nonlocal bins_f, bins_key
        known = _known_bins(sim)                 # the bins the batches folded so far fixed
        key = {qid: b.fixed.tobytes() for qid, b in known.items()}
        if key != bins_key:
            [bins_f], bins_key = client.scatter([known], broadcast=True, hash=False), key
        fut = _submit(client, _calibration_task, cpass_f, bins_f, batch=batches[i], name="calib")
        futures[fut] = i
        queue.add(fut)

    # With histograms, batch 0 fixes the bins that the others count into: it runs first.
    for i in ([0] if histogram else range(total)):
        submit(i)
    ready: dict[int, list] = {}
    nxt = 0
    try:
        for fut in queue:
            i = futures.pop(fut)
            pieces = fut.result()
            fut.release()
            if histogram and _stale(sim, pieces):   # an earlier batch fixed other bins
                submit(i)
                continue
            ready[i] = pieces
            while nxt in ready:
                pieces = ready.pop(nxt)
                if histogram and _stale(sim, pieces):
                    # rerun it, and every waiting batch that is stale already, at once
                    for j in [nxt] + [j for j in ready if _stale(sim, ready[j])]:
                        ready.pop(j, None)
                        submit(j)
                    break
                for qid, piece in pieces:
                    sim._handles[qid].quantizer.fold_stats(piece)
                nxt += 1
                if progress is not None:
                    progress(nxt, total)
                if histogram and nxt == 1:
                    for j in range(1, total):
                        submit(j)
        if nxt != total:  # pragma: no cover - the queue ended early
            raise ClusterError(f"the cluster returned {nxt} of {total} calibration batches")
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    sim._finish_calibration()


# ============================================================================ evaluate

def evaluate(sim, data: Any, client: Any = None, *, batch_size: int,
             metric: "str | Callable[[dict], Any] | None" = None,
             progress: Progress | None = None, timeout: float = CONNECT_TIMEOUT) -> Any:
    """Run the calibrated ``sim`` on every batch of ``data`` on a Dask cluster.

    ``metric``:
    * None: ``{output name: array}``, every batch's outputs concatenated in batch order;
    * ``"accuracy"``: ``100·correct/samples`` of the first output's argmax (axis 1) against the
      ``labels`` array of each shard (correct counts summed exactly);
    * ``"sqnr"``: output SQNR vs the FP32 model in dB, ``10·log10(Σ ref²/Σ (ref - sim)²)``, the
      float64 sums taken per batch and output and added in batch order (as ``qsim.analyze``);
    * a callable: ``metric(outputs)`` on the client, with ``outputs`` as for None.
    """
    if not sim.is_calibrated:
        raise NotCalibratedError("evaluate() needs a calibrated simulation: call "
                                 "compute_encodings first")
    kind = metric if isinstance(metric, str) else None
    if kind is not None and kind not in METRICS:
        raise QsimError(f"metric {metric!r} is not known; use 'accuracy', 'sqnr', a callable "
                        f"or None")
    if metric is not None and kind is None and not callable(metric):
        raise QsimError(f"metric must be 'accuracy', 'sqnr', a callable or None, got "
                        f"{type(metric).__name__}")
    batches = plan_batches(data, sim.graph.input_names, batch_size,
                           need_labels=kind == "accuracy")
    spass = sim.simulation_pass()
    if kind != "sqnr":  # the FP32 weights are only needed for the SQNR's reference run
        spass = replace(spass, graph=replace(spass.graph, nodes=(), params={}))
    with cluster(client, timeout=timeout) as c:
        results = _run_all(c, spass, kind, batches, progress)
    if kind == "accuracy":
        correct = sum(r[0] for r in results)
        n = sum(r[1] for r in results)
        return float(np.float64(correct) / np.float64(n) * 100.0)
    if kind == "sqnr":
        from .analyze import sqnr_db
        signal = noise = 0.0
        for per_output in results:
            for s, e in per_output:
                signal += s
                noise += e
        return sqnr_db(signal, noise)
    outputs = {name: np.concatenate([r[name] for r in results])
               for name in sim.graph.output_names}
    return outputs if metric is None else metric(outputs)


def _run_all(client, spass, kind: str | None, batches: list[Batch],
             progress: Progress | None) -> list:
    distributed = _dask()
    [spass_f] = client.scatter([(spass, _intra_op_threads())], broadcast=True, hash=False)
    futures = {_submit(client, _evaluation_task, spass_f, kind, batch=b, name="eval"): b.index
               for b in batches}
    results: list = [None] * len(batches)
    try:
        for done, fut in enumerate(distributed.as_completed(list(futures)), start=1):
            results[futures[fut]] = fut.result()
            if progress is not None:
                progress(done, len(batches))
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return results
