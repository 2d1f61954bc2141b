"""Calibration and evaluation on a Dask LocalCluster vs one process, ResNet-18-shaped model.

Prints, in one run on the same machine and the same batches:
* wall time of ``sim.compute_encodings`` (one process) vs ``qsim.distributed.compute_encodings``
  on a LocalCluster of 2 worker processes x 1 thread (and that the encodings are identical);
* the same for evaluation (``sim.run`` per batch vs ``qsim.distributed.evaluate``);
* where the cluster's time goes: start (parameter encodings, scatter, batch 0 alone), steady
  seconds per batch, the client's serial fold per batch, and the per-batch overhead
  ``W·(steady per batch) - (one-process per batch)``;
* bytes moved: the model once per worker, per batch the task and its statistics pieces;
* an estimate for 8 and 64 workers from those figures (stated model, not a measurement).

    python benchmarks/bench_distributed.py [--batch 8] [--size 112] [--batches 16]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_executor import resnet18  # noqa: E402

import qsim  # noqa: E402
import qsim.distributed as qd  # noqa: E402


def _bits(sim) -> dict:
    return {t: tuple(np.asarray(getattr(h.encoding, n), np.float64).tobytes()
                     for n in ("min", "max", "delta", "offset"))
            for t, h in sim.quantizers.items() if h.encoding is not None}


def _size(obj) -> int:
    from distributed.protocol import pickle
    return len(pickle.dumps(obj))


def _round_trip(payload, batch, pieces):
    """A task that does no work: the Dask cost of one batch (dispatch, the pieces sent back)."""
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    graph, _ = qsim.fold_batch_norms(qsim.load_onnx(resnet18(args.batch, args.size)))
    rng = np.random.default_rng(1)
    n, b = args.batches, args.batch
    x = rng.standard_normal((n * b, 3, args.size, args.size), dtype=np.float32)
    batches = [{"input": x[i * b:(i + 1) * b]} for i in range(n)]

    def make():
        return qsim.QuantizationSimModel(graph, quant_scheme="tf_enhanced", config_file="default")

    with tempfile.TemporaryDirectory() as tmp:
        half = (n // 2) * b
        paths = [Path(tmp) / "shard_0.npz", Path(tmp) / "shard_1.npz"]
        np.savez(paths[0], input=x[:half])
        np.savez(paths[1], input=x[half:])

        one = make()
        one.compute_encodings(batches[:1])                    # warm-up: Numba, BLAS
        t0 = time.perf_counter()
        one.compute_encodings(batches[:1])
        t_one_1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        one.compute_encodings(batches)
        t_one = time.perf_counter() - t0
        per_batch_one = (t_one - t_one_1) / (n - 1)          # slope: one batch's forward + stats
        t0 = time.perf_counter()
        local_out = [one.run(bt)[graph.output_names[0]] for bt in batches]
        t_eval_one = time.perf_counter() - t0

        # the client's serial work per batch: staleness check + fold of the pieces
        cpass = one.calibration_pass()
        pieces = cpass.observe_batch(batches[1], {})
        task_bytes = _size((qd.Batch(1, str(paths[0]), 8, 16, str(paths[0])),))
        piece_bytes = _size(pieces)
        cpass_bytes = _size(cpass)
        spass = one.simulation_pass()
        spass_bytes = _size(replace(spass, graph=replace(spass.graph, nodes=(), params={})))
        out_bytes = _size(local_out[0])
        fold_sim = make()
        fold_sim._begin_calibration()
        t0 = time.perf_counter()
        for _ in range(5):
            qd._stale(fold_sim, pieces)
            for qid, piece in pieces:
                fold_sim._handles[qid].quantizer.fold_stats(piece)
        fold_per_batch = (time.perf_counter() - t0) / 5

        w = args.workers
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            warm = make()
            qd.compute_encodings(warm, paths, client, batch_size=b)   # warm-up: imports, Numba
            sim = make()
            stamps: list[float] = []
            t_begin = time.perf_counter()
            qd.compute_encodings(sim, paths, client, batch_size=b,
                                 progress=lambda done, total: stamps.append(time.perf_counter()))
            t_cluster = time.perf_counter() - t_begin
            t0 = time.perf_counter()
            out = qd.evaluate(sim, paths, client, batch_size=b)
            t_eval_cluster = time.perf_counter() - t0
            # the Dask cost of a batch without its forward: 64 no-op tasks returning the pieces
            [payload] = client.scatter([cpass], broadcast=True, hash=False)
            [blob] = client.scatter([pieces], broadcast=True, hash=False)
            meta = qd.Batch(1, str(paths[0]), 8, 16, str(paths[0]))
            client.gather([client.submit(_round_trip, payload, meta, blob, pure=False)
                           for _ in range(4)])
            t0 = time.perf_counter()
            futs = [client.submit(_round_trip, payload, meta, blob, pure=False)
                    for _ in range(64)]
            from distributed import as_completed
            for f in as_completed(futs):
                f.result()
            dask_per_batch = (time.perf_counter() - t0) / 64

    identical = _bits(sim) == _bits(one)
    same_out = np.array_equal(out[graph.output_names[0]], np.concatenate(local_out))
    t_first = stamps[0] - t_begin                         # param encodings, scatter, batch 0
    steady = (stamps[-1] - stamps[0]) / max(n - 1, 1)    # wall per batch with w workers
    overhead = dask_per_batch + fold_per_batch     # the client's serial share of a batch
    tail = t_cluster - t_first - (stamps[-1] - stamps[0])

    print(f"ResNet-18 shape, tf_enhanced, default config, {n} batches of {b} x 3x{args.size}x{args.size} "
          f"in 2 .npz shards; LocalCluster {w} workers x 1 thread")
    print(f"  calibration, one process:      {t_one:7.2f} s  ({per_batch_one * 1e3:.0f} ms per batch)")
    print(f"  calibration, cluster:          {t_cluster:7.2f} s  speed-up {t_one / t_cluster:4.2f}x  "
          f"encodings identical: {identical}")
    print(f"    start (params, scatter, batch 0 alone): {t_first:6.2f} s; steady {steady * 1e3:.0f} ms "
          f"per batch; activation encodings {tail:5.2f} s")
    print(f"    per-batch overhead: Dask round trip (no-op task, pieces back) {dask_per_batch * 1e3:.1f} ms "
          f"+ client fold {fold_per_batch * 1e3:.1f} ms = {overhead * 1e3:.1f} ms "
          f"({overhead / per_batch_one:5.1%} of a one-process batch)")
    print(f"    W*steady - one-process per batch: {(w * steady - per_batch_one) * 1e3:7.1f} ms "
          f"(the one process already uses all {w} cores in its GEMMs; workers compete for them)")
    print(f"  evaluation, one process:       {t_eval_one:7.2f} s")
    print(f"  evaluation, cluster:           {t_eval_cluster:7.2f} s  speed-up "
          f"{t_eval_one / t_eval_cluster:4.2f}x  outputs identical: {same_out}")
    mib = 2 ** 20
    print(f"  bytes moved: CalibrationPass {cpass_bytes / mib:.1f} MiB and SimulationPass "
          f"{spass_bytes / mib:.1f} MiB (without metric; +FP32 weights for SQNR) once per worker; per batch: task {task_bytes} B out, "
          f"statistics pieces {piece_bytes / 1024:.0f} KiB back (evaluation: outputs "
          f"{out_bytes / 1024:.0f} KiB back); the batch itself {b * 3 * args.size ** 2 * 4 / mib:.2f} "
          f"MiB read by the worker from its shard")

    # Estimate for W workers on machines like this one (each worker with this machine's cores):
    # T(W) = start + max((N-1)·t/W, (N-1)·o) + tail + W·scatter, where t = one-process time per
    # batch, o = the client's serial share per batch (round trip + fold) and the model is sent to
    # each worker at 1 GB/s. N = 250 batches (2,000 calibration samples of 8).
    big_n = 250
    scatter_1 = cpass_bytes / 1e9
    t1 = t_one_1 + (big_n - 1) * per_batch_one
    print(f"  estimate, {big_n} batches (2,000 samples): T(W) = start + max((N-1)*t/W, (N-1)*o) "
          f"+ tail + W*model/(1 GB/s), t = {per_batch_one * 1e3:.0f} ms, o = {overhead * 1e3:.1f} ms")
    print(f"    1 process:  {t1:7.1f} s")
    for workers in (8, 64):
        par = (big_n - 1) * per_batch_one / workers
        serial = (big_n - 1) * overhead
        est = t_first + max(par, serial) + tail + workers * scatter_1
        print(f"    {workers:2d} workers: {est:7.1f} s  speed-up {t1 / est:5.1f}x  "
              f"(bound by {'the workers' if par >= serial else 'the client (serial per-batch share)'})")


if __name__ == "__main__":
    main()
