"""The ``hahrobust`` command: one module per subcommand, each parsing arguments and calling the library."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import typer

from hahrobust.cli import (
    ablate, attack, audit, check, corruption_sweep, hebbian_sweep, info, noise_sweep, snr, sparsity, train,
)
from hahrobust.cli._adaptive import TRANSFER_FROM
from hahrobust.cli._eval import N, takes_option
from hahrobust.errors import EXIT_STATUSES

HELP = (
    "Train and evaluate neuro-inspired CNNs (HaH, Hebbian, baseline) for sparsity, noise and adversarial robustness.\n\n"
    "Exit statuses: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_STATUSES.items()) + "."
)

app = typer.Typer(
    name="hahrobust",
    help=HELP,
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


def aliases(module: ModuleType) -> dict[str, str]:
    """The old option names a command module's command accepts: those of the shared options its signature uses,
    and its own (the module's ``OLD_NAMES``): old → new."""
    shared = {old: new for option, old, new in OLD_OPTION_NAMES if takes_option(module.command, option)}
    return {**shared, **getattr(module, "OLD_NAMES", {})}


def _context(module: ModuleType) -> dict[str, Any] | None:
    """Click reads an old name as the new one while parsing this command (``token_normalize_func``)."""
    mapping = aliases(module)
    return {"token_normalize_func": lambda name: mapping.get(name, name)} if mapping else None


#: The panels of ``hahrobust --help``, in order, and the commands in each.
PANELS: dict[str, tuple[ModuleType, ...]] = {
    "Training": (train, info),
    "Evaluation": (sparsity, snr, noise_sweep, corruption_sweep),
    "Attacks": (attack, audit),
    "Studies": (ablate, hebbian_sweep),
    "CI": (check,),
}

for panel, modules in PANELS.items():
    for module in modules:
        app.command(module.NAME, help=module.HELP, context_settings=_context(module), rich_help_panel=panel)(
            module.command
        )


def main() -> None:
    app()
