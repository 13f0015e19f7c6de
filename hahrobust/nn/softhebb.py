"""SoftHebb's learning rule (Moraitis et al. 2022; Journé, Rodríguez, Guo & Moraitis, ICLR 2023): soft winner-take-all
Hebbian plasticity, no labels and no feedback.

For a patch x (the layer's input under its kernel) the units' pre-activations are u = W·x and their soft-WTA outputs
y = softmax(u / τ) over the units; each unit k moves as

    Δw_k = η · y_k · (x − u_k · w_k),

Oja's rule gated by the soft competition: the winner's weights move toward the patch, and the −u_k·w_k term keeps
‖w_k‖ near 1. Over a batch the updates of all P patches (every location of every image) are averaged:

    ΔW = η · (Yᵀ X − diag(Σ_p y_pk u_pk) · W) / P,

one [K, P] × [P, D] matmul; no locations × units × patch tensor is formed. As in the authors' code the step is then
scaled so that its largest entry is η (a rate that does not depend on the batch or the layer's size). The paper's
further refinements (an
anti-Hebbian sign for the losers, a per-unit adaptive learning rate from ‖w_k‖) are left out (``docs/results/leaderboard.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def conv_patches(x: torch.Tensor, kernel_size: int, padding: int) -> torch.Tensor:
    """Every patch of ``x`` [B, C, H, W] under a ``kernel_size`` kernel: [B·H'·W', C·k²] (conv2d's weight layout)."""
    columns = F.unfold(x, kernel_size, padding=padding)  # [B, C·k², L]
    return columns.transpose(1, 2).reshape(-1, columns.shape[1])


def softhebb_delta(weight: torch.Tensor, patches: torch.Tensor, temperature: float) -> torch.Tensor:
    """The soft-WTA Hebbian update of ``weight`` [K, D] from ``patches`` [P, D], scaled to a largest entry of 1
    (the caller multiplies by η); all zeros when the batch gives no update at all."""
    u = patches @ weight.T  # [P, K]
    y = torch.softmax(u / temperature, dim=1)
    delta = y.T @ patches - (y * u).sum(dim=0)[:, None] * weight
    return delta / delta.abs().amax().clamp_min(torch.finfo(delta.dtype).tiny)
