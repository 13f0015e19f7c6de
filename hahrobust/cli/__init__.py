"""The ``hahrobust`` command: one module per subcommand, each parsing arguments and calling the library."""

from __future__ import annotations

import typer

from hahrobust.cli import (
    ablate, attack, check, corruption_sweep, hebbian_sweep, info, noise_sweep, snr, sparsity, train,
)

app = typer.Typer(
    name="hahrobust",
    help="Train and evaluate neuro-inspired CNNs (HaH, Hebbian, baseline) for sparsity, noise and adversarial robustness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for module in (train, info, sparsity, snr, noise_sweep, corruption_sweep, hebbian_sweep, check, ablate, attack):
    app.command(module.NAME, help=module.HELP)(module.command)


def main() -> None:
    app()
