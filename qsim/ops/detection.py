"""Object-detection post-processing: NonMaxSuppression (ONNX opsets 10-11), as ONNX Runtime's CPU
kernel computes it.

For every batch entry and class, ONNX Runtime

1. describes every box (with ``score > score_threshold`` when that input is given) by its
   float32 edges: corners ``[y1, x1, y2, x2]`` in either order give
   ``x_min, x_max = (x2, x1) if x1 >= x2 else (x1, x2)`` (likewise y); ``center_point_box=1``
   boxes ``[xc, yc, w, h]`` give ``x_min, x_max = xc ⊖ w/2, xc ⊕ w/2`` (likewise y); its area is
   ``(x_max ⊖ x_min) ⊗ (y_max ⊖ y_min)`` (from the edges also for center boxes, not ``w ⊗ h``:
   ONNX Runtime 1.32 keeps or suppresses as that area says where the two differ);
2. puts them in a ``std::priority_queue`` (``make_heap`` over the boxes in index order) whose
   order is "higher score first, then lower index", and pops them (:func:`heap_pop_order`
   replays libstdc++'s heap, which only matters for NaN scores, which compare as equal to
   everything);
3. keeps a popped box unless its IoU with an already kept box of the class exceeds
   ``iou_threshold``, until ``max_output_boxes_per_class`` boxes are kept::

       ix_min = max(x_min_k, x_min_c), ix_max = min(x_max_k, x_max_c)   no overlap if ix_max ≤ ix_min
       inter = (ix_max ⊖ ix_min) ⊗ (iy_max ⊖ iy_min)                    none if inter ≤ 0
       union = area_k ⊕ area_c ⊖ inter                   none if area_k, area_c or union ≤ 0
       suppressed ⇔ inter ⊘ union > iou_threshold

   with k the kept box, c the candidate, ``max(p, q) = q if p < q else p`` and
   ``min(p, q) = q if q < p else p`` (std::max/min: a NaN edge of the kept box propagates, one
   of the candidate does not, and a NaN area never suppresses).

The output is ``int64[num_selected, 3]`` of ``(batch, class, box)``. The suppression loop is a
Numba kernel; its NumPy twin computes each candidate's IoU against all kept boxes at once (the
same float32 operations element by element).
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..jit import USE_NUMBA, kernel
from .registry import register

F32 = np.float32


@kernel
def _before(scores, a, b):
    """ONNX Runtime's ``BoxInfo::operator<`` on boxes ``a``, ``b``: ``a`` pops after ``b``."""
    return scores[a] < scores[b] or (scores[a] == scores[b] and a > b)


@kernel
def _adjust_heap(heap, hole, length, value, scores):
    """libstdc++'s ``__adjust_heap``: walk the hole from ``hole`` down to the child that pops
    first (the right one unless it pops after the left), then sift ``value`` up from there."""
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _before(scores, heap[child], heap[child - 1]):
            child -= 1
        heap[hole] = heap[child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        heap[hole] = heap[child - 1]
        hole = child - 1
    while hole > top:
        parent = (hole - 1) // 2
        if not _before(scores, heap[parent], value):
            break
        heap[hole] = heap[parent]
        hole = parent
    heap[hole] = value


@kernel
def heap_pop_order(scores, keep):
    """The indices ``i`` with ``keep[i]`` in the order ``std::priority_queue`` built from them
    (in index order, ``make_heap``) pops them (``pop_heap``), under :func:`_before`."""
    heap = np.flatnonzero(keep).astype(np.int64)
    n = heap.shape[0]
    if n >= 2:
        parent = (n - 2) // 2
        while True:
            _adjust_heap(heap, parent, n, heap[parent], scores)
            if parent == 0:
                break
            parent -= 1
    order = np.empty(n, np.int64)
    for k in range(n):
        order[k] = heap[0]
        last = n - 1 - k
        if last > 0:
            value = heap[last]
            heap[last] = heap[0]
            _adjust_heap(heap, 0, last, value, scores)
    return order


def edges(boxes: np.ndarray, center: bool) -> tuple:
    """``(x_min, x_max, y_min, y_max, area)`` of every row of ``boxes`` (float32, step 1)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _edges(boxes.astype(F32), center)


def _edges(b: np.ndarray, center: bool) -> tuple:
    if center:
        half_w, half_h = b[:, 2] / F32(2), b[:, 3] / F32(2)
        x0, x1, y0, y1 = (b[:, 0] - half_w, b[:, 0] + half_w, b[:, 1] - half_h,
                          b[:, 1] + half_h)
    else:
        swap_x, swap_y = b[:, 1] >= b[:, 3], b[:, 0] >= b[:, 2]
        x0, x1 = np.where(swap_x, b[:, 3], b[:, 1]), np.where(swap_x, b[:, 1], b[:, 3])
        y0, y1 = np.where(swap_y, b[:, 2], b[:, 0]), np.where(swap_y, b[:, 0], b[:, 2])
    return x0, x1, y0, y1, (x1 - x0) * (y1 - y0)


@kernel
def _select_kernel(x0, x1, y0, y1, area, order, threshold, limit):
    """Box indices kept from ``order`` (the popped order) of one class: greedy suppression."""
    kept = np.empty(min(order.shape[0], limit), np.int64)
    count = 0
    for t in range(order.shape[0]):
        if count >= limit:
            break
        c = order[t]
        selected = True
        for j in range(count):
            k = kept[j]
            ix0 = x0[c] if x0[k] < x0[c] else x0[k]
            ix1 = x1[c] if x1[c] < x1[k] else x1[k]
            if ix1 <= ix0:
                continue
            iy0 = y0[c] if y0[k] < y0[c] else y0[k]
            iy1 = y1[c] if y1[c] < y1[k] else y1[k]
            if iy1 <= iy0:
                continue
            inter = (ix1 - ix0) * (iy1 - iy0)
            if inter <= np.float32(0):
                continue
            union = area[k] + area[c] - inter
            if area[k] <= np.float32(0) or area[c] <= np.float32(0) or union <= np.float32(0):
                continue
            if inter / union > threshold:
                selected = False
                break
        if selected:
            kept[count] = c
            count += 1
    return kept[:count]


def _select_numpy(x0, x1, y0, y1, area, order, threshold, limit) -> np.ndarray:
    """NumPy twin of :func:`_select_kernel`: each candidate against all kept boxes at once."""
    kept: list[int] = []
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for c in order:
            if len(kept) >= limit:
                break
            if kept:
                k = np.array(kept)
                ix0 = np.where(x0[k] < x0[c], x0[c], x0[k])
                ix1 = np.where(x1[c] < x1[k], x1[c], x1[k])
                iy0 = np.where(y0[k] < y0[c], y0[c], y0[k])
                iy1 = np.where(y1[c] < y1[k], y1[c], y1[k])
                inter = (ix1 - ix0) * (iy1 - iy0)
                union = area[k] + area[c] - inter
                if np.any(~(ix1 <= ix0) & ~(iy1 <= iy0) & ~(inter <= 0) & ~(area[k] <= 0)
                          & ~(area[c] <= 0) & ~(union <= 0) & (inter / union > threshold)):
                    continue
            kept.append(int(c))
    return np.array(kept, np.int64)


def _scalar_input(name: str, value, dtype) -> object:
    if value is None:
        return None
    v = np.asarray(value)
    if v.dtype != dtype or v.size != 1:
        raise OpError(f"NonMaxSuppression: {name} has {v.dtype}{list(v.shape)}, expected one "
                      f"{np.dtype(dtype).name} value")
    return v.reshape(-1)[0]


@register("NonMaxSuppression")
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box=0):
    """``int64[num_selected, 3]`` rows ``(batch, class, box)`` of the boxes kept per batch
    entry and class, in ONNX Runtime's order (module docstring: its heap order, float32 IoU
    ``> iou_threshold`` suppresses, ``score > score_threshold`` filters). No or a 0
    ``max_output_boxes_per_class`` keeps nothing."""
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    if boxes.dtype != np.float32 or boxes.ndim != 3 or boxes.shape[2] != 4:
        raise OpError(f"NonMaxSuppression: boxes has {boxes.dtype}{list(boxes.shape)}, expected "
                      f"float32[batches, boxes, 4]")
    if scores.dtype != np.float32 or scores.ndim != 3 \
            or (scores.shape[0], scores.shape[2]) != boxes.shape[:2]:
        raise OpError(f"NonMaxSuppression: scores has {scores.dtype}{list(scores.shape)}, "
                      f"expected float32[{boxes.shape[0]}, classes, {boxes.shape[1]}]")
    if center_point_box not in (0, 1):
        raise OpError(f"NonMaxSuppression: attribute center_point_box={center_point_box}, "
                      f"expected 0 or 1")
    limit = _scalar_input("max_output_boxes_per_class", max_output_boxes_per_class, np.int64)
    iou = _scalar_input("iou_threshold", iou_threshold, np.float32)
    floor = _scalar_input("score_threshold", score_threshold, np.float32)
    limit = 0 if limit is None else max(int(limit), 0)
    iou = F32(0) if iou is None else F32(iou)
    if not 0 <= iou <= 1:
        raise OpError(f"NonMaxSuppression: iou_threshold={iou} must be in [0, 1]")
    rows = []
    select = _select_kernel if USE_NUMBA else _select_numpy
    for b in range(boxes.shape[0] if limit else 0):
        box_edges = [np.ascontiguousarray(e) for e in edges(boxes[b], bool(center_point_box))]
        for c in range(scores.shape[1]):
            s = np.ascontiguousarray(scores[b, c])
            keep = np.ones(s.shape, np.bool_) if floor is None else s > F32(floor)
            kept = select(*box_edges, heap_pop_order(s, keep), iou, limit)
            rows += [(b, c, int(k)) for k in kept]
    return np.array(rows, np.int64).reshape(-1, 3)
