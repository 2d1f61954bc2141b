"""The executor: one flat loop over the nodes of a :class:`~qsim.ir.Graph`.

``run(graph, feeds)`` keeps tensors as plain NumPy arrays in a ``name → array`` dict. An optional
``observe(name, array)`` hook sees every tensor as it is produced (graph inputs first, then each
node output, in node order) and may return a replacement array; calibration and
quantize-dequantize use it. Any intermediate tensor can be asked for by name via ``outputs=``.
Tensors are dropped as soon as their last consumer has run, so peak memory is that of the live
activations, not of the whole forward pass.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from .errors import FeedError, GraphError, OpError, QsimError, UnknownOpError
from .ir import Graph, Node
from .kernels.family import resolve as resolve_family
from .ops import OPS, internal_keywords, supported_attributes

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


def _relu_fusions(graph: Graph, keep: Iterable[str],
                  ops: Mapping[str, Callable] | None) -> dict[int, int]:
    """Node index → index of the Relu node it absorbs: the node's op takes the ``then_relu``
    keyword (see :mod:`qsim.ops.registry`), its single output is read by that Relu alone and is
    neither kept (a requested output) nor a graph output, and neither op is replaced by ``ops``.
    The result is the same array as running both nodes; only the intermediate tensor is never
    materialized."""
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name:
                readers.setdefault(name, []).append(i)
    keep = set(keep) | set(graph.output_names)
    custom = set(ops or ())
    fused = {}
    for i, node in enumerate(graph.nodes):
        fn = OPS.get(node.op_type)
        if fn is None or node.op_type in custom or "then_relu" not in internal_keywords(fn) \
                or len(node.outputs) != 1 or not node.outputs[0] or node.outputs[0] in keep:
            continue
        users = readers.get(node.outputs[0], [])
        if len(users) == 1:
            relu = graph.nodes[users[0]]
            if relu.op_type == "Relu" and "Relu" not in custom and list(relu.inputs) == \
                    [node.outputs[0]] and len(relu.outputs) == 1:
                fused[i] = users[0]
    return fused


def call_op(node: Node, args: list, ops: Mapping[str, Callable] | None = None,
            constants: "set[str] | frozenset[str]" = frozenset(), *,
            family: str = "avx2", opset: int = 17, then_relu: bool = False) -> tuple:
    """Run one node's op function; wrap any failure in an :class:`OpError` naming the node.

    ``ops`` may supply implementations for op types outside the library (e.g. the simulation's
    quantize-dequantize nodes); they follow the same calling convention. ``constants`` names the
    tensors that are initializers (for ops taking the ``constant_b`` keyword); ``family`` is the
    float32 kernel family (for ops taking the ``fp32_kernels`` keyword); ``opset`` the graph's
    default-domain opset version (for ops taking the ``opset`` keyword); ``then_relu``: the op
    also applies the Relu that reads its output (only for ops taking the ``then_relu`` keyword,
    see :func:`_relu_fusions`)."""
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
    if then_relu:
        kwargs["then_relu"] = True
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
    wanted = list(graph.output_names if outputs is None else outputs)
    env: dict[str, np.ndarray] = dict(graph.params)
    env.update(check_feeds(graph, feeds))
    if observe is not None:
        for name in graph.input_names:
            replaced = observe(name, env[name])
            if replaced is not None:
                env[name] = replaced
    drops = _last_uses(graph, wanted)
    constants = set(graph.params).difference(dynamic_params)
    # a Relu after a Conv runs inside it, unless every tensor is observed
    fusions = _relu_fusions(graph, wanted, ops) if observe is None else {}
    absorbed = set(fusions.values())
    for i, node in enumerate(graph.nodes):
        if i in absorbed:           # its result was stored by the node it follows
            for name in drops.get(i, ()):
                env.pop(name, None)
            continue
        try:
            args = [env[name] if name else None for name in node.inputs]
        except KeyError as exc:
            raise GraphError(f"{node.describe()}: input {exc} is not defined when the node "
                             f"runs (validate() the graph)") from None
        results = call_op(node, args, ops, constants, family=family, opset=graph.opset,
                          then_relu=i in fusions)
        if i in fusions:            # the output is the Relu's
            node = graph.nodes[fusions[i]]
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
