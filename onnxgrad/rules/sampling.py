"""Sampling: GridSample, RoiAlign, AffineGrid, Col2Im.

Several ops here are linear in their data input but defined by intricate index arithmetic
(GridSample's padding modes and align_corners, RoiAlign's sampling grid). Their adjoint is
written with the op itself: applied to an identity basis, the op returns its own weight matrix W,
and the gradient is W^T dy. That is exact for every mode the op supports, at the cost of memory
proportional to (input positions) x (output positions) per image.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from onnx import TensorProto, helper

from ..emitter import END, Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


def _basis(g: Emitter, x: str, batch: str, n_positions: int, spatial: Sequence[int]) -> str:
    """Identity images: channel q of every batch entry is 1 at spatial position q, 0 elsewhere."""
    eye = g.EyeLike(g.constant_of_shape(g.ints([n_positions, n_positions]), 0.0, like=x))
    eye = g.reshape(eye, [1, n_positions, *spatial])
    return g.Expand(eye, g.Concat(batch, g.ints([n_positions, *spatial]), axis=0))




@register_gradient("GridSample", since=16, inputs=[0])
def grid_sample(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # Linear in X for a fixed grid. The grid's own gradient is not computed (the schema tags it
    # non-differentiable; it is piecewise smooth for bilinear/bicubic modes).
    x, grid = op.inputs[0], op.input(1)
    shape = g.static_dims(x, "GridSample")
    y_shape = g.static_dims(dy, "GridSample")
    q, p = int(np.prod(shape[2:])), int(np.prod(y_shape[2:]))
    basis = _basis(g, x, g.dims(x, [0]), q, shape[2:])
    weights = g.reshape(g.GridSample(basis, grid, **{k: op.attr(k) for k in ("align_corners", "mode", "padding_mode")}),
                        [0, q, p])
    dx = g.MatMul(g.reshape(dy, [0, shape[1], p]), g.Transpose(weights, perm=[0, 2, 1]))
    return [g.reshape(dx, list(shape)), None]


@register_gradient("RoiAlign", since=10, inputs=[0])
def roi_align(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # mode "avg" is linear in X; each roi's weights come from RoiAlign on one identity image,
    # then roi contributions are summed into their batch entries with a one-hot matrix.
    if op.attr("mode", "avg") != "avg":
        raise GradientArgumentError("the gradient of RoiAlign is implemented for mode='avg' only")
    x, rois, batch_indices = op.inputs[:3]
    shape = g.static_dims(x, "RoiAlign")
    y_shape = g.static_dims(dy, "RoiAlign")
    n, c = shape[0], shape[1]
    q, p = int(np.prod(shape[2:])), int(np.prod(y_shape[2:]))
    basis = _basis(g, x, g.ints([1]), q, shape[2:])
    attrs = {k: op.attr(k) for k in ("coordinate_transformation_mode", "output_height", "output_width",
                                     "sampling_ratio", "spatial_scale")}
    weights = g.reshape(g.RoiAlign(basis, rois, g.Mul(batch_indices, g.const(0, like=batch_indices)), **attrs),
                        [0, q, p])
    per_roi = g.MatMul(g.reshape(dy, [0, c, p]), g.Transpose(weights, perm=[0, 2, 1]))  # (R, C, Q)
    owner = g.cast_like(g.Equal(g.unsqueeze(batch_indices, [0]), g.const(np.arange(n).reshape(n, 1),
                                                                           like=batch_indices)), x)  # (N, R)
    dx = g.MatMul(owner, g.reshape(per_roi, [-1, c * q]))
    return [g.reshape(dx, list(shape)), None, None]


@register_gradient("AffineGrid", inputs=[0])
def affine_grid(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # grid[n, p, :] = theta[n] @ [coords_p, 1]: dtheta = dy^T [coords, 1], with the coordinates
    # from AffineGrid itself applied to the identity transform (they do not depend on theta).
    theta, size = op.inputs[0], op.input(1)
    nd = g.dims_of(theta)[1]
    if not isinstance(nd, int):
        raise GradientArgumentError(f"the gradient of AffineGrid needs the static shape of {theta!r}")
    identity = g.const(np.eye(nd, nd + 1)[None], like=theta)
    one_size = g.Concat(g.ints([1]), g.Slice(size, g.ints([1]), g.ints([nd + 2])), axis=0)
    coords = g.reshape(g.AffineGrid(identity, one_size, align_corners=op.attr("align_corners", 0)), [1, -1, nd])
    flat = g.reshape(dy, [0, -1, nd])  # (N, P, nd)
    d_linear = g.MatMul(g.Transpose(flat, perm=[0, 2, 1]), coords)
    d_shift = g.Transpose(g.reduce_sum(flat, [1], keepdims=True), perm=[0, 2, 1])
    return [g.Concat(d_linear, d_shift, axis=2), None]


@register_gradient("Col2Im", inputs=[0])
def col2im(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # Col2Im sums blocks into an image; its adjoint extracts the blocks again (im2col), which is a
    # grouped Conv whose kernels pick one block offset each.
    x = op.inputs[0]
    block_value, width = g.constant_value(op.inputs[2]), g.dims_of(x)[1]
    if block_value is None or not isinstance(width, int):
        return [_im2col_dynamic(g, op, dy), None, None]
    block = [int(b) for b in block_value]
    k = int(np.prod(block))
    c = width // k
    kernels = np.tile(np.eye(k).reshape(k, 1, *block), (c, 1) + (1,) * len(block))
    nd = len(block)
    cols = g.Conv(dy, g.const(kernels, like=x), group=c, kernel_shape=block,
                  dilations=op.attr("dilations", [1] * nd), pads=op.attr("pads", [0] * 2 * nd),
                  strides=op.attr("strides", [1] * nd))
    return [g.reshape(cols, [0, c * k, -1]), None, None]



def _im2col_dynamic(g: Emitter, op: Op, dy: str) -> str:
    """im2col when the block shape or the channel count is known only at run time.

    Every channel of every image is one image of one channel (so no group count is needed), and
    the k = prod(block_shape) kernels, the rows of a k x k identity reshaped to the block, are
    built at run time; the blocks of each channel come out in the order Col2Im reads them.
    """
    x, block = op.inputs[0], g.cast(op.inputs[2], TensorProto.INT64)
    k = g.ReduceProd(block, axes=[0], keepdims=1)
    identity = g.EyeLike(g.constant_of_shape(g.Concat(k, k, axis=0), 0.0, like=x))
    kernels = g.Reshape(identity, g.Concat(g.ints([-1, 1]), block, axis=0))  # (k, 1, *block)
    images = g.Reshape(dy, g.Concat(g.ints([-1, 1]), g.Slice(g.Shape(dy), g.ints([2]), g.ints([END])), axis=0))
    cols = g.Conv(images, kernels, dilations=op.attr("dilations"), pads=op.attr("pads"), strides=op.attr("strides"))
    return g.reshape(cols, g.shape_of(x))  # (N * C, k, blocks...) -> (N, C * k, L)




def _deform_conv_forward(b: Emitter, op: Op) -> str:
    """DeformConv (2-D) written with elementary ops, into the nested emitter ``b``: the output.

    Each kernel tap of each output position samples x bilinearly at its shifted position (the
    four neighbouring pixels, those outside the image counting as zero, as GridSample with
    align_corners=1 and zero padding does), scaled by the mask; a grouped matrix product with W
    follows. Floor and the integer pixel indices carry no gradient, so the chain rule through
    these ops gives exactly the bilinear sampling derivatives.
    """
    x, w, offset, bias, mask = op.inputs[0], op.inputs[1], op.inputs[2], op.input(3), op.input(4)
    c, height, width = (_static(b, x, a) for a in (1, 2, 3))
    oc, _, kh, kw = b.static_dims(w, "DeformConv")
    oh, ow = _static(b, offset, 2), _static(b, offset, 3)
    group, og = op.attr("group", 1), op.attr("offset_group", 1)
    sh, sw = op.attr("strides", [1, 1])
    dh, dw = op.attr("dilations", [1, 1])
    pt, pl = op.attr("pads", [0, 0, 0, 0])[:2]
    k, p = kh * kw, oh * ow
    ki, kj = np.divmod(np.arange(k), kw)
    i, j = np.divmod(np.arange(p), ow)
    base_h = b.const((np.add.outer(ki * dh, i * sh) - pt).reshape(1, 1, k, p), like=x)
    base_w = b.const((np.add.outer(kj * dw, j * sw) - pl).reshape(1, 1, k, p), like=x)
    shifts = b.reshape(offset, [0, og, k, 2, p])  # (dh, dw) per tap, as the spec lays them out
    h = b.Add(b.Gather(shifts, b.scalar_int(0), axis=3), base_h)
    v = b.Add(b.Gather(shifts, b.scalar_int(1), axis=3), base_w)
    h0, v0 = b.Floor(h), b.Floor(v)
    frac_h, frac_w = b.Sub(h, h0), b.Sub(v, v0)
    one, zero = b.const(1, like=x), b.const(0, like=x)
    pixels = b.reshape(x, [0, og, c // og, height * width])
    every_channel = b.Concat(b.Shape(pixels, end=3), b.ints([k * p]), axis=0)
    terms = []
    for a, e in ((0, 0), (0, 1), (1, 0), (1, 1)):
        row, col = b.Add(h0, b.const(a, like=x)), b.Add(v0, b.const(e, like=x))
        weight = b.Mul(frac_h if a else b.Sub(one, frac_h), frac_w if e else b.Sub(one, frac_w))
        inside = b.And(b.And(b.GreaterOrEqual(row, zero), b.LessOrEqual(row, b.const(height - 1, like=x))),
                       b.And(b.GreaterOrEqual(col, zero), b.LessOrEqual(col, b.const(width - 1, like=x))))
        weight = b.reshape(b.Where(inside, weight, zero), [0, og, 1, k * p])
        flat = b.Add(b.Mul(b.Clip(row, zero, b.const(height - 1, like=x)), b.const(width, like=x)),
                     b.Clip(col, zero, b.const(width - 1, like=x)))
        index = b.Expand(b.reshape(b.Cast(flat, to=TensorProto.INT64), [0, og, 1, k * p]), every_channel)
        terms.append(b.Mul(b.GatherElements(pixels, index, axis=3), weight))
    sampled = b.Sum(*terms)
    if mask is not None:
        sampled = b.Mul(sampled, b.reshape(mask, [0, og, 1, k * p]))
    columns = b.reshape(sampled, [0, group, (c // group) * k, p])  # channel-major, then tap, per group
    y = b.MatMul(b.reshape(w, [group, oc // group, (c // group) * k]), columns)
    y = b.reshape(y, [0, oc, oh, ow])
    return b.Add(y, b.reshape(bias, [1, oc, 1, 1])) if bias is not None else y


def _static(g: Emitter, x: str, axis: int) -> int:
    """Dimension ``axis`` of ``x``, which DeformConv's gradient needs static."""
    d = g.dims_of(x)[axis]
    if not isinstance(d, int):
        raise GradientArgumentError(f"the gradient of DeformConv needs the static size of axis {axis} of {x!r}")
    return d


@register_gradient("DeformConv", inputs=[0, 1, 2, 3, 4])
def deform_conv(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # The op is replayed as elementary ops (bilinear sampling, mask, grouped MatMul) and the
    # engine differentiates that replay w.r.t. X, W, offset, B and mask.
    from ..subgraph import Body  # subgraph.py builds on the engine, which imports the rules

    if len(g.dims_of(op.inputs[0])) != 4:
        raise GradientArgumentError("the gradient of DeformConv is implemented for 2-D images (4-D X)")
    b = g.nested()
    y = _deform_conv_forward(b, op)
    forward = helper.make_graph(b.nodes, "DeformConv_replay", [], [])
    xs = [x for x in dict.fromkeys(op.inputs) if x and g.is_float(x)]
    body = Body(g, forward, [], [], list(op.inputs) + [dy], "DeformConv_replay")
    grads = dict(zip(xs, body.backprop([y], [dy], xs)))
    return body.inline_gradients(grads, op.inputs)
