"""The benchmark's ONNX graphs run by PyTorch autograd (CPU), for a side-by-side reference.

:func:`runner` interprets an ONNX model node by node with ``torch.nn.functional`` (the op types of
the benchmark's models: the light zoo, ``small_cnn``, ``transformer_block`` and ``segnet512``;
others raise :class:`Unsupported`), with the weights as leaf tensors that require gradients. The
same network, the same weights: the forward loss must equal onnxruntime's (checked by the
benchmark before timing).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper


class Unsupported(Exception):
    """An op or attribute this interpreter does not implement."""


def _attrs(node: onnx.NodeProto) -> Dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(torch, x, pads: List[int], value: float):
    """Apply ONNX [begin..., end...] spatial pads; returns (padded x, symmetric padding for the op)."""
    n = len(pads) // 2
    if pads[:n] == pads[n:]:
        return x, pads[:n]
    flat: List[int] = []
    for b, e in zip(reversed(pads[:n]), reversed(pads[n:])):
        flat += [b, e]
    return torch.nn.functional.pad(x, flat, value=value), [0] * n


def _node(torch, node: onnx.NodeProto, ins: list, opset: int) -> list:
    F = torch.nn.functional
    a = _attrs(node)
    op = node.op_type
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise Unsupported(f"{op} auto_pad")
    if op == "Conv":
        x, w = ins[0], ins[1]
        n = w.dim() - 2
        x, pad = _pads(torch, x, list(a.get("pads", [0] * 2 * n)), 0.0)
        conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        return [conv(x, w, ins[2] if len(ins) > 2 else None, list(a.get("strides", [1] * n)), pad,
                     list(a.get("dilations", [1] * n)), a.get("group", 1))]
    if op in ("MaxPool", "AveragePool"):
        k = list(a["kernel_shape"])
        n = len(k)
        fill = float("-inf") if op == "MaxPool" else 0.0
        strides = list(a.get("strides", [1] * n))
        ceil = bool(a.get("ceil_mode", 0))
        pads = list(a.get("pads", [0] * 2 * n))
        uncounted = op == "AveragePool" and a.get("count_include_pad", 0) == 0  # pads left out of the count
        if uncounted and pads[:n] != pads[n:]:
            # asymmetric pads left out of the count: window sums over the zero-padded input
            # divided by the pooled count of real positions
            pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
            padded, _ = _pads(torch, ins[0], pads, 0.0)
            ones, _ = _pads(torch, torch.ones_like(ins[0][:1, :1]), pads, 0.0)
            return [pool(padded, k, strides, 0, ceil, True) / pool(ones, k, strides, 0, ceil, True)]
        if uncounted and any(pads):
            x, pad = ins[0], pads[:n]
        else:
            x, pad = _pads(torch, ins[0], pads, fill)
        if op == "MaxPool":
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
            return [pool(x, k, strides, pad, list(a.get("dilations", [1] * n)), ceil)]
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
        return [pool(x, k, strides, pad, ceil, bool(a.get("count_include_pad", 0)))]
    if op == "GlobalAveragePool":
        return [ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True)]
    if op == "BatchNormalization":
        eps = a.get("epsilon", 1e-5)
        if not (ins[3].requires_grad or ins[4].requires_grad):
            return [F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False, 0.0, eps)]
        # running statistics differentiated too (as onnxgrad does when they are among the xs)
        shape = [1, -1] + [1] * (ins[0].dim() - 2)
        scale = ins[1] / torch.sqrt(ins[4] + eps)
        return [(ins[0] - ins[3].reshape(shape)) * scale.reshape(shape) + ins[2].reshape(shape)]
    if op == "Relu":
        return [F.relu(ins[0])]
    if op == "LRN":
        return [F.local_response_norm(ins[0], a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0))]
    if op == "Gemm":
        A = ins[0].t() if a.get("transA", 0) else ins[0]
        B = ins[1].t() if a.get("transB", 0) else ins[1]
        y = a.get("alpha", 1.0) * (A @ B)
        return [y + a.get("beta", 1.0) * ins[2] if len(ins) > 2 else y]
    if op in ("Add", "Mul", "Sub", "Div", "MatMul"):
        f = {"Add": torch.add, "Mul": torch.mul, "Sub": torch.sub, "Div": torch.div, "MatMul": torch.matmul}[op]
        return [f(ins[0], ins[1])]
    if op == "Sum":
        out = ins[0]
        for t in ins[1:]:
            out = out + t
        return [out]
    if op == "Concat":
        return [torch.cat(ins, dim=a["axis"])]
    if op == "Reshape":
        shape = [int(d) for d in ins[1].tolist()]
        shape = [ins[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [ins[0].reshape(shape)]
    if op == "Flatten":
        axis = a.get("axis", 1)
        return [ins[0].reshape(int(np.prod(ins[0].shape[:axis])), -1)]
    if op == "Unsqueeze":
        out = ins[0]
        for ax in sorted(a["axes"] if "axes" in a else ins[1].tolist()):
            out = out.unsqueeze(ax)
        return [out]
    if op == "Transpose":
        return [ins[0].permute(*a["perm"])]
    if op == "Dropout":
        return [ins[0]]
    if op == "Softmax":
        axis = a.get("axis", 1 if opset < 13 else -1)
        if opset < 13:
            shape = ins[0].shape
            return [F.softmax(ins[0].reshape(int(np.prod(shape[:axis])), -1), dim=1).reshape(shape)]
        return [F.softmax(ins[0], dim=axis)]
    if op == "ReduceSum":
        axes = a.get("axes") or (ins[1].tolist() if len(ins) > 1 else None)
        keep = bool(a.get("keepdims", 1))
        return [ins[0].sum(dim=tuple(axes), keepdim=keep) if axes else
                (ins[0].sum().reshape([1] * ins[0].dim()) if keep else ins[0].sum())]
    if op == "Resize":
        scales = ins[2].tolist() if len(ins) > 2 and ins[2] is not None and ins[2].numel() else None
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        ctm = a.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        if scales is None or scales[:2] != [1.0, 1.0] or ctm != "half_pixel" or mode not in ("nearest", "linear"):
            raise Unsupported("Resize other than half_pixel nearest/linear by scales")
        n = ins[0].dim() - 2
        kind = "nearest" if mode == "nearest" else ("linear", "bilinear", "trilinear")[n - 1]
        extra = {} if kind == "nearest" else {"align_corners": False}
        return [F.interpolate(ins[0], scale_factor=scales[2:], mode=kind, **extra)]
    if op == "Gather":
        axis = a.get("axis", 0) % ins[0].dim()
        idx = ins[1].long()
        idx = torch.where(idx < 0, idx + ins[0].shape[axis], idx)
        picked = ins[0].index_select(axis, idx.reshape(-1))
        return [picked.reshape(ins[0].shape[:axis] + idx.shape + ins[0].shape[axis + 1:])]
    if op == "LayerNormalization":
        axis = a.get("axis", -1) % ins[0].dim()
        return [F.layer_norm(ins[0], ins[0].shape[axis:], ins[1], ins[2] if len(ins) > 2 else None,
                             a.get("epsilon", 1e-5))]
    if op == "Split":
        axis = a.get("axis", 0)
        given = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("split")
        sizes = [int(v) for v in given] if given is not None else ins[0].shape[axis] // len(node.output)
        return list(torch.split(ins[0], sizes, dim=axis))
    if op == "Slice":
        if len(ins) < 3:
            raise Unsupported("Slice before opset 10")
        starts, ends = ins[1].tolist(), ins[2].tolist()
        axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        if any(st != 1 for st in steps):
            raise Unsupported("Slice with steps")
        index = [slice(None)] * ins[0].dim()
        for b, e, ax in zip(starts, ends, axes):
            index[ax] = slice(b, e)  # Python clamps out-of-range ends as ONNX does
        return [ins[0][tuple(index)]]
    if op == "Cast":
        kinds = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 11: torch.float64}
        if a["to"] not in kinds:
            raise Unsupported(f"Cast to {a['to']}")
        return [ins[0].to(kinds[a["to"]])]
    if op == "Where":
        return [torch.where(ins[0], ins[1], ins[2])]
    if op == "Tanh":
        return [torch.tanh(ins[0])]
    if op == "SoftmaxCrossEntropyLoss":
        if len(ins) > 2 and ins[2] is not None:
            raise Unsupported("SoftmaxCrossEntropyLoss weights")
        reduction = a.get("reduction", b"mean")
        reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
        extra = {"ignore_index": a["ignore_index"]} if "ignore_index" in a else {}
        return [F.cross_entropy(ins[0], ins[1].long(), reduction=reduction, **extra)]
    raise Unsupported(op)


def runner(model: onnx.ModelProto, feed: Dict[str, np.ndarray], weights: List[str], loss: str
           ) -> Tuple[Callable[[], float], Callable[[], float]]:
    """(forward without autograd, forward + backward with respect to ``weights``), each returning the loss."""
    import torch

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    consts: Dict[str, object] = {}
    for t in model.graph.initializer:
        value = torch.from_numpy(numpy_helper.to_array(t).copy())
        consts[t.name] = value.requires_grad_(True) if t.name in weights else value
    for name, v in feed.items():
        consts[name] = torch.from_numpy(v)
    nodes = list(model.graph.node)
    leaves = [consts[w] for w in weights]

    def run() -> object:
        env = dict(consts)
        for node in nodes:
            if node.op_type == "Constant":
                env[node.output[0]] = torch.from_numpy(numpy_helper.to_array(node.attribute[0].t).copy())
                continue
            outs = _node(torch, node, [env[i] if i else None for i in node.input], opset)
            env.update(zip(node.output, outs))
        return env[loss]

    def forward() -> float:
        with torch.no_grad():
            return float(run())

    def forward_backward() -> float:
        for t in leaves:
            t.grad = None
        value = run()
        value.backward()
        return float(value.detach())

    forward()  # raises Unsupported before any timing
    return forward, forward_backward
