"""Layer-local gradients for the HaH cost without a second forward pass.

In the authors' code each block's term α_l·L_l updates only that block's conv weights: no gradient
of it reaches earlier layers. :func:`local_conv2d` runs the convolution once and returns two tensors
with the same value: ``out`` (the network's path: gradients flow to input and weights as usual) and
``local`` (for the cost: its gradient flows to the weights and bias only). The backward pass computes
the input gradient from ``out``'s gradient alone and the weight gradient from the sum of both, which
is exactly what a detached-input second convolution would give, at the cost of one extra [B,C,H,W]
buffer instead of one extra convolution.
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
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        return out, out.clone()

    @staticmethod
    def backward(ctx: Any, grad_out, grad_local):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        if grad_out is None:
            grad_out = torch.zeros_like(grad_local)
        grad_for_weight = grad_out if grad_local is None else grad_out + grad_local
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1] or (has_bias and ctx.needs_input_grad[2]):
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_for_weight, x, weight, [weight.shape[0]] if has_bias else None,
                stride, padding, dilation, False, [0, 0], groups, [False, True, has_bias],
            )
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
