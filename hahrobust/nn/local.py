"""Layer-local gradients for the HaH cost without a second forward pass.

In the authors' code each block's term α_l·L_l updates only that block's conv weights: no gradient
of it reaches earlier layers. :func:`local_conv2d` runs the convolution once and returns two tensors
with the same value: ``out`` (the network's path: gradients flow to input and weights as usual) and
``local`` (for the cost: its gradient flows to the weights and bias only). The backward pass computes
the input gradient from ``out``'s gradient alone and the weight gradient from the sum of both, which
is exactly what a detached-input second convolution would give, without a second convolution and
without a copy: ``local`` is a view of ``out`` (autograd still gives each its own gradient, and
refuses an in-place change to either).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _LocalConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not as zeros
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        # A view, not a copy: two distinct outputs with their own gradients, one buffer.
        return out, out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad_out, grad_local):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        if grad_out is None and grad_local is None:
            return None, None, None, None, None, None, None
        if grad_out is None:
            grad_for_weight = grad_local
        else:
            grad_for_weight = grad_out if grad_local is None else grad_out + grad_local
        # Under autocast the forward convolution ran in a lower precision than the saved inputs:
        # differentiate in that precision, and return each gradient in its input's dtype.
        compute = grad_for_weight.dtype
        xc, wc = x.to(compute), weight.to(compute)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0] and grad_out is not None:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, xc, wc, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
            )[0].to(x.dtype)
        if ctx.needs_input_grad[1] or (has_bias and ctx.needs_input_grad[2]):
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_for_weight, xc, wc, [weight.shape[0]] if has_bias else None,
                stride, padding, dilation, False, [0, 0], groups, [False, True, has_bias],
            )
            grad_w = grad_w.to(weight.dtype)
            grad_b = None if grad_b is None else grad_b.to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


def local_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(conv2d output, the same values with a weights-only gradient path)."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    return _LocalConv2d.apply(x, weight, bias, pair(stride), pair(padding), pair(dilation), groups)
