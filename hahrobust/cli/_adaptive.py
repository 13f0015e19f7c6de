"""Options of the adaptive attacks, shared by ``attack`` and ``audit``: the gradient path, the PGD loss, and the
transfer source (``--transfer-from``; "surrogate" is BPDA's smooth backward, nothing else)."""

from __future__ import annotations


import typer

from hahrobust.attacks.gradients import GRADIENTS, GradientPath
from hahrobust.attacks.pgd import LOSSES
from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import DEFAULT_TEMPERATURE, SURROGATE_KINDS

GRADIENT = typer.Option(
    None, "--gradient",
    show_default="plain; bpda when --bpda is given",
    help=f"Gradient the attack follows: {' | '.join(GRADIENTS)}. bpda: "
    "forward exact, backward through a smooth surrogate of every threshold (BPDA; a model without one keeps its "
    "exact gradient, with a note); eot: averaged over jittered copies of the input. Logits are unchanged.",
)
BPDA_BACKWARD = typer.Option(
    "sigmoid", "--bpda-backward",
    help=f"BPDA surrogate: {' | '.join(SURROGATE_KINDS)} (a sigmoid mask around τ, or straight-through).",
)
BPDA_TEMPERATURE = typer.Option(
    DEFAULT_TEMPERATURE, "--bpda-temperature", help="Sigmoid width, in units of the channel's standard deviation."
)
EOT_SAMPLES = typer.Option(8, "--eot-samples", help="EOT: jittered copies averaged per gradient.")
EOT_SIGMA = typer.Option(
    2 / 255, "--eot-sigma", help="EOT: standard deviation of the Gaussian jitter ([0, 1] pixels).", show_default="2/255"
)
LOSS = typer.Option(
    None, "--loss", help=f"PGD loss: {' | '.join(LOSSES)} (C&W-style logit margin).", show_default="ce (ℓ1: margin)"
)
TRANSFER_FROM = typer.Option(
    None, "--transfer-from", metavar="CKPT",
    help="Transfer attack: run the attack on this checkpoint (the transfer source) and verify its examples on each "
    "model.",
)


def gradient_path(name: str, backward: str, temperature: float, eot_samples: int, eot_sigma: float) -> GradientPath:
    return GradientPath(name, backward, temperature, eot_samples, eot_sigma)  # type: ignore[arg-type]


def check_loss(loss: str | None) -> None:
    if loss is not None and loss not in LOSSES:
        raise HahrobustError(f"unknown --loss {loss!r}; choose one of: {', '.join(LOSSES)}")
