"""The ``hahrobust`` command: one module per subcommand, each parsing arguments and calling the library.

A command's module is imported when the command runs or shows its own help, never for ``hahrobust --help``:
the modules bring in torch and pandas (seconds), the listing needs only :data:`COMMANDS` (``benchmarks/startup.py``
measures it). A new command is a module with ``NAME`` and ``command`` plus one :data:`COMMANDS` line.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import typer
from typer.core import TyperGroup

from hahrobust.errors import EXIT_STATUSES

HELP = (
    "Train and evaluate neuro-inspired CNNs (HaH, Hebbian, baseline) for sparsity, noise and adversarial robustness.\n\n"
    "Exit statuses: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_STATUSES.items()) + "."
)


@dataclass(frozen=True)
class Entry:
    """A command as ``hahrobust --help`` lists it: its module under ``hahrobust.cli``, panel and help text."""

    module: str
    panel: str
    help: str


#: Every command, in the order and panels of ``hahrobust --help``.
COMMANDS: dict[str, Entry] = {
    "train": Entry("train", "Training", "Train a model (presets: paper, authors, small, medium) and write a safetensors checkpoint."),
    "info": Entry("info", "Training", "Show a checkpoint's metadata (model, config, training, data, metrics, versions)."),
    "sparsity": Entry("sparsity", "Evaluation", "Activation sparsity (normalized Hoyer measure, non-zero fraction) of the leading conv blocks (Fig. 2)."),
    "snr": Entry("snr", "Evaluation", "SNR (dB) of every conv block's input under Gaussian input noise (Eq. 6, Fig. 3)."),
    "noise-sweep": Entry("noise_sweep", "Evaluation", "Accuracy under additive Gaussian (or uniform) input noise for a list of σ (Fig. 4)."),
    "corruption-sweep": Entry(
        "corruption_sweep", "Evaluation",
        "Accuracy under the 15 common corruptions of CIFAR-10-C (and the 4 extra ones) at severities 1–5, with "
        "CE and relative CE against a --reference model. Corruptions are generated per image from --seed with the "
        "CIFAR parameters of Hendrycks' make_cifar_c.py (cached), or read from the official files (--corruptions-dir).",
    ),
    "attack": Entry(
        "attack", "Attacks",
        "Robust accuracy under AutoAttack, PGD, FMN, DDN, Square or any registered attack (ℓ∞/ℓ2/ℓ1/ℓ0), every "
        "example verified; --table paper: Table 1.",
    ),
    "audit": Entry(
        "audit", "Attacks",
        "Adaptive robustness audit: per-image worst case over plain, BPDA/EOT, smooth-twin, transfer and black-box "
        "attacks with convergence rounds, a masking verdict from per-image evidence, and diagnostics.",
    ),
    "recheck": Entry(
        "recheck", "Attacks",
        "Verify saved adversarial examples again with a checkpoint (finite, in [0, 1], within ε, still fooling it).",
    ),
    "certify": Entry(
        "certify", "Attacks",
        "Certified ℓ2 accuracy of the Gaussian-smoothed models (randomized smoothing, Cohen et al. 2019): a lower "
        "bound no attack can lower.",
    ),
    "report": Entry(
        "report", "Studies",
        "The paper's whole evaluation of a model pair in one command: every claim with its statistics and a verdict "
        "computed by a stated rule, as Markdown, self-contained HTML and JSON.",
    ),
    "leaderboard": Entry(
        "leaderboard", "Studies",
        "Many models against one baseline, ranked by the audit's worst case (AutoAttack's rank beside it): clean, "
        "noise, AutoAttack, worst case with verdict and convergence, certified accuracy, each with its interval and "
        "a paired test, Holm over the table; journaled, resumable, --jobs.",
    ),
    "calibrate": Entry(
        "calibrate", "Studies",
        "The audit's verdict on defences whose truth is known (k-WTA masked, adversarial training robust, the "
        "baseline, HaH): worst case, effort-controlled masking test and attack self-test per case and norm.",
    ),
    "ablate": Entry("ablate", "Studies", "Train the ablation variants (Table 2) from one preset and seed and evaluate clean/noisy/AutoAttack accuracy."),
    "hebbian-sweep": Entry("hebbian_sweep", "Studies", "Train the Hebbian/gradient/random layer configurations of Amato et al. 2019 (Table 2) and tabulate accuracy."),
    "check": Entry("check", "CI", "Compare a results file (CSV/JSON) with an expected one; exit 0 within tolerance, 1 regression, 2 unusable."),
}

#: Old spellings of shared options, still accepted but shown nowhere: (module, declaration, old name, new name).
#: ``--n`` is not used under torchrun, whose own parser stops at it ("ambiguous option: --n could match --nnodes").
OLD_OPTION_NAMES: tuple[tuple[str, str, str, str], ...] = (
    ("hahrobust.cli._eval", "N", "n", "images"),
    ("hahrobust.cli._adaptive", "TRANSFER_FROM", "surrogate", "transfer-from"),  # "surrogate" is BPDA's backward
)


def module(name: str) -> ModuleType:
    """The module of command ``name`` (imported now)."""
    return importlib.import_module(f"hahrobust.cli.{COMMANDS[name].module}")


def aliases(command_module: ModuleType) -> dict[str, str]:
    """The old option names a command module's command accepts: those of the shared options its signature uses,
    and its own (the module's ``OLD_NAMES``): old → new."""
    from hahrobust.cli._common import takes_option

    # A declaration's module is imported by any command that uses it: one not imported yet is used by none.
    shared = {
        old: new for where, declaration, old, new in OLD_OPTION_NAMES
        if where in sys.modules and takes_option(command_module.command, getattr(sys.modules[where], declaration))
    }
    return {**shared, **getattr(command_module, "OLD_NAMES", {})}


@functools.cache
def load(name: str) -> Any:
    """Command ``name`` as Typer builds it: its module's ``command``, help text, panel and old option spellings
    (click reads an old name as the new one while parsing the command: ``token_normalize_func``)."""
    found = module(name)
    mapping = aliases(found)
    one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    one.command(
        name, help=COMMANDS[name].help, rich_help_panel=COMMANDS[name].panel,
        context_settings={"token_normalize_func": lambda option: mapping.get(option, option)} if mapping else None,
    )(found.command)
    return typer.main.get_command(one)


def commands() -> dict[str, Any]:
    """Every command, loaded (its parameters, callback, help): for tests and the documentation."""
    return {name: load(name) for name in COMMANDS}


class _Listed:
    """A command as the group's help lists it (name, help, panel); anything else loads the command."""

    hidden = False
    deprecated = False
    short_help = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.help = COMMANDS[name].help
        self.rich_help_panel = COMMANDS[name].panel

    def __getattr__(self, attribute: str) -> Any:
        return getattr(load(self.name), attribute)


class _LazyGroup(TyperGroup):
    """The ``hahrobust`` group: commands from :data:`COMMANDS`, each module imported only when it is needed."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return _Listed(cmd_name) if cmd_name in COMMANDS else None


app = typer.Typer(
    name="hahrobust",
    help=HELP,
    cls=_LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    pass  # the group itself has no options: a callback makes Typer build a group from no registered command


def main() -> None:
    app()
