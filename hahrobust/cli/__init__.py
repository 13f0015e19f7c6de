"""The ``hahrobust`` command: one module per subcommand, each parsing arguments and calling the library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from hahrobust.cli import (
    ablate, attack, audit, check, corruption_sweep, hebbian_sweep, info, noise_sweep, recheck, report, snr, sparsity,
    train,
)
from hahrobust.cli._adaptive import TRANSFER_FROM
from hahrobust.cli._eval import N, takes_option

app = typer.Typer(
    name="hahrobust",
    help="Train and evaluate neuro-inspired CNNs (HaH, Hebbian, baseline) for sparsity, noise and adversarial robustness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Old spellings of shared options, still accepted but shown nowhere: (declaration, old name, new name).
#: ``--n`` is not used under torchrun, whose own parser stops at it ("ambiguous option: --n could match --nnodes").
OLD_OPTION_NAMES: tuple[tuple[Any, str, str], ...] = (
    (N, "n", "images"),
    (TRANSFER_FROM, "surrogate", "transfer-from"),  # the transfer source; "surrogate" is BPDA's backward
)


def aliases(command: Callable[..., Any]) -> dict[str, str]:
    """The old option names a command accepts (those of the shared options its signature uses): old → new."""
    return {old: new for option, old, new in OLD_OPTION_NAMES if takes_option(command, option)}


def _context(command: Callable[..., Any]) -> dict[str, Any] | None:
    """Click reads an old name as the new one while parsing this command (``token_normalize_func``)."""
    mapping = aliases(command)
    return {"token_normalize_func": lambda name: mapping.get(name, name)} if mapping else None


for module in (
    train, info, sparsity, snr, noise_sweep, corruption_sweep, hebbian_sweep, check, ablate, attack, audit, recheck,
    report,
):
    app.command(module.NAME, help=module.HELP, context_settings=_context(module.command))(module.command)


def main() -> None:
    app()
