"""The ``hahrobust`` command: one module per subcommand, each parsing arguments and calling the library."""

from __future__ import annotations

import typer

from hahrobust.cli import (
    ablate, attack, audit, certify, check, corruption_sweep, hebbian_sweep, info, noise_sweep, snr, sparsity, train,
)
from hahrobust.cli._eval import SUBSET_CONTEXT, takes_subset_option

app = typer.Typer(
    name="hahrobust",
    help="Train and evaluate neuro-inspired CNNs (HaH, Hebbian, baseline) for sparsity, noise and adversarial robustness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (train, info, sparsity, snr, noise_sweep, corruption_sweep, hebbian_sweep, check, ablate, attack, audit, certify):
    context = SUBSET_CONTEXT if takes_subset_option(module.command) else None  # the hidden --n alias of --images
    app.command(module.NAME, help=module.HELP, context_settings=context)(module.command)


def main() -> None:
    app()
