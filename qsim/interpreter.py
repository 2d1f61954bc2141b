"""The executor: one flat loop over the nodes of a :class:`~qsim.ir.Graph`.

``run(graph, feeds)`` keeps tensors as plain NumPy arrays in a ``name → array`` dict. An optional
``observe(name, array)`` hook sees every tensor as it is produced (graph inputs first, then each
node output, in node order) and may return a replacement array; calibration and
quantize-dequantize use it. Any intermediate tensor can be asked for by name via ``outputs=``.
Tensors are dropped as soon as their last consumer has run, so peak memory is that of the live
activations, not of the whole forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from .errors import FeedError, GraphError, OpError, QsimError, UnknownOpError
from .ir import Graph, Node
from .kernels.family import resolve as resolve_family
from .ops import OPS, epilogue, internal_keywords, supported_attributes

Observer = Callable[[str, np.ndarray], "np.ndarray | None"]


def unsupported(graph: Graph) -> list[str]:
    """One line per node whose op type or attributes the op library does not support."""
    problems = []
    for node in graph.nodes:
        if node.op_type not in OPS:
            problems.append(f"{node.describe()}: op type '{node.op_type}' is not supported")
            continue
        extra = sorted(set(node.attrs) - supported_attributes(node.op_type))
        if extra:
            problems.append(f"{node.describe()}: attribute(s) {', '.join(extra)} not supported "
                            f"(supported: {', '.join(sorted(supported_attributes(node.op_type))) or 'none'})")
    return problems


def check_supported(graph: Graph) -> None:
    """Raise :class:`UnknownOpError` listing every unsupported node at once."""
    problems = unsupported(graph)
    if problems:
        raise UnknownOpError(f"graph '{graph.name}' uses {len(problems)} unsupported node(s):\n  "
                             + "\n  ".join(problems))


def check_feeds(graph: Graph, feeds: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Validate feeds against the graph inputs: exact names, dtype, rank and fixed dimensions."""
    if not isinstance(feeds, Mapping):
        raise FeedError(f"feeds must be a dict {{input name: array}}, got {type(feeds).__name__}; "
                        f"graph inputs: {list(graph.input_names)}")
    expected = list(graph.input_names)
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unknown {extra}")
        raise FeedError(f"feeds do not match the graph inputs: {'; '.join(parts)}; "
                        f"expected exactly {expected}")
    checked = {}
    for info in graph.inputs:
        value = feeds[info.name]
        if not isinstance(value, np.ndarray):
            try:
                value = np.asarray(value, dtype=info.dtype)
            except (TypeError, ValueError) as exc:
                raise FeedError(f"feed '{info.name}': cannot convert {type(value).__name__} to "
                                f"an array of {info.dtype}: {exc}") from None
        if info.dtype is not None and value.dtype != info.dtype:
            raise FeedError(f"feed '{info.name}' has dtype {value.dtype}, expected {info.dtype} "
                            f"(convert with .astype(np.{np.dtype(info.dtype).name}))")
        if info.shape is not None:
            shape_ok = value.ndim == len(info.shape) and all(
                not isinstance(d, int) or d == s for d, s in zip(info.shape, value.shape))
            if not shape_ok:
                raise FeedError(f"feed '{info.name}' has shape {tuple(value.shape)}, expected "
                                f"{_shape_text(info.shape)}")
        checked[info.name] = value
    return checked


def _shape_text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _last_uses(graph: Graph, keep: Iterable[str]) -> dict[int, list[str]]:
    """Node index → tensors whose last reader is that node (and which are not kept)."""
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name:
                last[name] = i
    keep = set(keep) | set(graph.params)
    by_node: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in keep:
            by_node.setdefault(i, []).append(name)
    return by_node


def _readers(graph: Graph) -> dict[str, list[int]]:
    """Tensor name → indices of the nodes that read it (once per input slot)."""
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name:
                readers.setdefault(name, []).append(i)
    return readers


def _relu_fusions(graph: Graph, keep: Iterable[str],
                  ops: Mapping[str, Callable] | None, taken: Iterable[int] = ()) -> dict[int, int]:
    """Node index → index of the Relu node it absorbs: the node's op takes the ``then_relu``
    keyword (see :mod:`qsim.ops.registry`), its single output is read by that Relu alone and is
    neither kept (a requested output) nor a graph output, and neither op is replaced by ``ops``
    (nor is either node in ``taken``, already part of another fusion).
    The result is the same array as running both nodes; only the intermediate tensor is never
    materialized."""
    readers = _readers(graph)
    keep = set(keep) | set(graph.output_names)
    custom = set(ops or ())
    taken = set(taken)
    fused = {}
    for i, node in enumerate(graph.nodes):
        fn = OPS.get(node.op_type)
        if fn is None or i in taken or node.op_type in custom \
                or "then_relu" not in internal_keywords(fn) \
                or len(node.outputs) != 1 or not node.outputs[0] or node.outputs[0] in keep:
            continue
        users = readers.get(node.outputs[0], [])
        if len(users) == 1 and users[0] not in taken:
            relu = graph.nodes[users[0]]
            if relu.op_type == "Relu" and "Relu" not in custom and list(relu.inputs) == \
                    [node.outputs[0]] and len(relu.outputs) == 1:
                fused[i] = users[0]
    return fused


def _epilogue_fusions(graph: Graph, keep: Iterable[str], ops: Mapping[str, Callable] | None,
                      constant: Callable[[str], "np.ndarray | None"]
                      ) -> dict[int, tuple[tuple[int, ...], tuple]]:
    """Conv node index → (indices of the nodes it absorbs, their :mod:`qsim.ops.epilogue`
    steps): the chain of per-channel ops (BatchNormalization, Mul/Add by a constant per-channel
    vector, Relu) that reads a float32 Conv's output, each link's output read by the next link
    alone and neither kept nor a graph output, no op replaced by ``ops``. Chains of a single
    Relu are left to :func:`_relu_fusions`. The Conv computes the chain in its bias pass: the
    same operations, the same bits, one pass per link less."""
    readers = _readers(graph)
    keep = set(keep) | set(graph.output_names)
    custom = set(ops or ())
    chains = {}
    for i, node in enumerate(graph.nodes):
        if node.op_type != "Conv" or "Conv" in custom or len(node.outputs) != 1 \
                or len(node.inputs) < 2:
            continue
        w = constant(node.inputs[1])
        if w is None or w.dtype != np.float32 or w.ndim < 3:
            continue
        absorbed, steps, tensor = [], [], node.outputs[0]
        while tensor and tensor not in keep and len(readers.get(tensor, ())) == 1:
            j = readers[tensor][0]
            link = graph.nodes[j]
            more = None if link.op_type in custom else epilogue.node_steps(
                link, tensor, constant, w.shape[0], w.ndim)
            if more is None:
                break
            absorbed.append(j)
            steps.extend(more)
            tensor = link.outputs[0]
        if any(step.code != epilogue.RELU for step in steps):
            chains[i] = (tuple(absorbed), tuple(steps))
    return chains


@dataclass(frozen=True)
class _Plan:
    """What :func:`run` derives from the graph alone for one set of options (kept in
    ``graph.memo``): the tensors each node is the last reader of, the initializers, the
    values of the nodes that read only constants (computed once, when nothing is observed)
    and the fusions (node index → the nodes it absorbs, and the keywords that tell its op)."""

    drops: Mapping[int, tuple[str, ...]]
    constants: frozenset
    folded: Mapping[str, np.ndarray]
    fusions: Mapping[int, tuple[tuple[int, ...], Mapping[str, object]]]
    absorbed: frozenset


def _plan(graph: Graph, wanted: tuple[str, ...], ops: Mapping[str, Callable] | None,
          dynamic_params: frozenset, observed: bool, family: str) -> _Plan:
    """The plan of :func:`run` for these options, made once per graph and options."""
    key = ("run-plan", wanted, frozenset(ops or ()), dynamic_params, observed, family)
    plan = graph.memo.get(key)
    if plan is None:
        plan = graph.memo[key] = _make_plan(graph, wanted, ops, dynamic_params, observed,
                                            family)
    return plan


def _make_plan(graph, wanted, ops, dynamic_params, observed, family) -> _Plan:
    drops = {i: tuple(names) for i, names in _last_uses(graph, wanted).items()}
    constants = frozenset(set(graph.params).difference(dynamic_params))
    folded: dict[str, np.ndarray] = {}
    if observed:
        return _Plan(drops, constants, folded, {}, frozenset())
    custom = set(ops or ())
    for node in graph.nodes:        # nodes of constants only: computed here, once
        if node.op_type in custom or node.op_type not in OPS or not node.inputs \
                or not all(not name or name in constants or name in folded
                           for name in node.inputs):
            continue
        args = [(graph.params[n] if n in constants else folded[n]) if n else None
                for n in node.inputs]
        for name, value in zip(node.outputs, call_op(node, args, None, constants,
                                                     family=family, opset=graph.opset)):
            if name:
                value = np.asarray(value)
                value.flags.writeable = False
                folded[name] = value

    def constant(name):
        return graph.params[name] if name in constants else folded.get(name)

    chains = _epilogue_fusions(graph, wanted, ops, constant)
    fusions = {i: (absorbed, {"then_steps": steps}) for i, (absorbed, steps) in chains.items()}
    taken = set(chains) | {j for absorbed, _ in chains.values() for j in absorbed}
    for i, j in _relu_fusions(graph, wanted, ops, taken).items():
        fusions[i] = ((j,), {"then_relu": True})
    return _Plan(drops, constants, folded, fusions,
                 frozenset(j for absorbed, _ in fusions.values() for j in absorbed))


def call_op(node: Node, args: list, ops: Mapping[str, Callable] | None = None,
            constants: "set[str] | frozenset[str]" = frozenset(), *,
            family: str = "avx2", opset: int = 17,
            fused: Mapping[str, object] | None = None) -> tuple:
    """Run one node's op function; wrap any failure in an :class:`OpError` naming the node.

    ``ops`` may supply implementations for op types outside the library (e.g. the simulation's
    quantize-dequantize nodes); they follow the same calling convention. ``constants`` names the
    tensors that are initializers (for ops taking the ``constant_b`` keyword); ``family`` is the
    float32 kernel family (for ops taking the ``fp32_kernels`` keyword); ``opset`` the graph's
    default-domain opset version (for ops taking the ``opset`` keyword); ``fused``: the
    keywords by which the op also computes the nodes it absorbs (``then_relu`` or
    ``then_steps``, see :func:`_relu_fusions` and :func:`_epilogue_fusions`)."""
    fn = ops.get(node.op_type) if ops else None
    fn = fn if fn is not None else OPS.get(node.op_type)
    if fn is None:
        raise UnknownOpError(f"{node.describe()}: op type '{node.op_type}' is not supported")
    while args and args[-1] is None:
        args.pop()
    kwargs = dict(node.attrs)
    wanted = internal_keywords(fn)
    if "noutputs" in wanted:
        kwargs["noutputs"] = len(node.outputs)
    if "constant_b" in wanted:
        kwargs["constant_b"] = len(node.inputs) > 1 and node.inputs[1] in constants
    if "fp32_kernels" in wanted:
        kwargs["fp32_kernels"] = family
    if "opset" in wanted:
        kwargs["opset"] = opset
    if fused:
        kwargs.update(fused)
    try:
        result = fn(*args, **kwargs)
    except QsimError as exc:
        raise type(exc)(f"{node.describe()}: {exc}") from None
    except Exception as exc:  # a NumPy error deep inside an op: say which node and inputs
        shapes = ", ".join(f"{name or '-'}: {_describe_array(a)}" for name, a in zip(node.inputs, args))
        raise OpError(f"{node.describe()} failed on inputs [{shapes}]: "
                      f"{type(exc).__name__}: {exc}") from exc
    return result if isinstance(result, tuple) else (result,)


def _describe_array(a) -> str:
    if a is None:
        return "absent"
    a = np.asarray(a)
    return f"{a.dtype}{list(a.shape)}"


def run(graph: Graph, feeds: Mapping[str, np.ndarray], *, observe: Observer | None = None,
        outputs: Iterable[str] | None = None,
        ops: Mapping[str, Callable] | None = None,
        dynamic_params: Iterable[str] = (),
        fp32_kernels: str = "auto") -> dict[str, np.ndarray]:
    """Execute ``graph`` on ``feeds`` and return ``{name: array}`` for ``outputs``.

    ``outputs`` defaults to the graph outputs and may name any tensor (input, parameter or
    intermediate). ``observe(name, array)`` is called on every graph input and node output as it
    is produced; if it returns an array, that array replaces the tensor downstream. ``ops`` adds
    op implementations for custom op types (see :func:`call_op`). ``dynamic_params`` names
    parameters to treat as computed tensors rather than initializers (the simulation's
    pre-quantized weights, which AIMET's session computes with QDQ nodes). ``fp32_kernels``
    chooses whose float32 bits the ops reproduce: ``"auto"`` (ONNX Runtime's kernel family on this
    CPU), ``"avx2"`` or ``"avx512"`` (the same bits on any machine; :mod:`qsim.kernels.family`).
    """
    try:
        family = resolve_family(fp32_kernels)
    except ValueError as exc:
        raise QsimError(str(exc)) from None
    wanted = tuple(graph.output_names if outputs is None else outputs)
    # fusions and constant folding only when no tensor is observed
    plan = _plan(graph, wanted, ops, frozenset(dynamic_params), observe is not None, family)
    env: dict[str, np.ndarray] = dict(graph.params)
    env.update(plan.folded)
    env.update(check_feeds(graph, feeds))
    if observe is not None:
        for name in graph.input_names:
            replaced = observe(name, env[name])
            if replaced is not None:
                env[name] = replaced
    drops, fusions, constants = plan.drops, plan.fusions, plan.constants
    for i, node in enumerate(graph.nodes):
        if i in plan.absorbed or node.outputs and node.outputs[0] in plan.folded:
            for name in drops.get(i, ()):   # computed by the node it follows, or folded
                env.pop(name, None)
            continue
        try:
            args = [env[name] if name else None for name in node.inputs]
        except KeyError as exc:
            raise GraphError(f"{node.describe()}: input {exc} is not defined when the node "
                             f"runs (validate() the graph)") from None
        fusion = fusions.get(i)
        results = call_op(node, args, ops, constants, family=family, opset=graph.opset,
                          fused=fusion[1] if fusion else None)
        if fusion:                  # the output is the last absorbed node's
            node = graph.nodes[fusion[0][-1]]
        if len(results) < sum(1 for o in node.outputs if o):
            raise OpError(f"{node.describe()}: produced {len(results)} output(s), the node "
                          f"declares {len(node.outputs)}")
        for name, value in zip(node.outputs, results):
            if not name:
                continue
            if observe is not None:
                replaced = observe(name, value)
                if replaced is not None:
                    value = replaced
            env[name] = value
        for name in drops.get(i, ()):
            env.pop(name, None)
    missing = [n for n in wanted if n not in env]
    if missing:
        raise GraphError(f"requested tensor(s) {missing} are not defined in graph '{graph.name}'")
    return {name: env[name] for name in wanted}
