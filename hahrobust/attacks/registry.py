"""The attack registry: one entry per attack, the one place the runner, the commands and the audit look attacks up.

An entry (:class:`AttackSpec`) says everything the toolkit needs to run an attack on an image set: its name, the
norms it supports, whether it returns minimum-norm examples instead of working at a fixed ε, its configuration
dataclass, and its run function with the one signature every attack shares::

    run(model, x, y, *, norm, eps, indices, seed, config) -> x_adv

(``eps`` is None for a minimum-norm attack; ``indices`` are the images' positions in the evaluated set, the key of
their per-image seeds). The runner (:mod:`hahrobust.attacks.run`) verifies whatever ``run`` returns, so an entry
never has to be trusted.

Adding an attack is one new module (its function and config dataclass) plus one :func:`register` line below, as in
foolbox and torchattacks; ``hahrobust attack --attack NAME`` then runs it, and an entry with ``audit`` set joins
``hahrobust audit``'s ensemble. A test registers a toy random-search attack this way (``tests/test_registry.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from hahrobust.attacks import autoattack as _autoattack
from hahrobust.attacks._common import AttackFlag
from hahrobust.attacks import ddn as _ddn
from hahrobust.attacks import fmn as _fmn
from hahrobust.attacks import pgd as _pgd
from hahrobust.attacks import spsa as _spsa
from hahrobust.attacks import square as _square
from hahrobust.attacks.norms import NORMS, check_norm
from hahrobust.errors import HahrobustError

RunFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class AuditRole:
    """How an attack joins ``hahrobust audit``'s ensemble when registered with one (display name, kind as in
    :data:`hahrobust.studies.audit.Kind`, whether it attacks only the images no earlier member broke, and whether
    it runs by default or only when ``--include`` names it)."""

    display: str
    kind: str = "black-box"
    survivors: bool = True
    default: bool = True  # False: only with ``--include <key>`` (a costly member that broke nothing measured)


@dataclass(frozen=True)
class AttackSpec:
    """One attack, as the registry knows it.

    ``options`` maps a command-line option (``steps`` for ``--steps``) to the config field it sets, so a command
    builds any attack's config from the options given without knowing the attack (:meth:`configure`).
    ``prepare`` runs before any model or image is loaded (a missing implementation fails first). ``transfer``
    turns the config into the one a transfer attack uses (PGD keeps climbing the source's margin instead of
    stopping at its first break: more confident examples transfer better). ``settings`` is how the config is
    recorded in a result's settings (a dict merged into them).
    """

    name: str
    norms: tuple[str, ...]
    config: type
    run: RunFunction
    minimum_norm: bool = False
    title: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    prepare: Callable[[Any], None] | None = None
    transfer: Callable[[Any], Any] | None = None
    settings: Callable[[Any], dict[str, Any]] | None = None
    audit: AuditRole | None = None
    flag: type[AttackFlag] = AttackFlag  # the warning a recorded sanity-check message is raised again with

    @property
    def display(self) -> str:
        return self.title or self.name

    def default_config(self) -> Any:
        return self.config()

    def configure(self, **given: Any) -> Any:
        """The config with the given command-line options set (None values are left at their defaults)."""
        values = {self.options[k]: v for k, v in given.items() if v is not None and k in self.options}
        return self.config(**values)

    def config_settings(self, config: Any) -> dict[str, Any]:
        """The config as a result records it (``{name: fields}`` unless the entry says otherwise)."""
        return self.settings(config) if self.settings is not None else {self.name: dataclasses.asdict(config)}


REGISTRY: dict[str, AttackSpec] = {}
#: The attack a command or the runner uses when none is named (robust accuracy as users compare it).
DEFAULT_ATTACK = "autoattack"


def register(spec: AttackSpec, *, replace: bool = False) -> AttackSpec:
    """Add ``spec`` to the registry (an existing name is refused unless ``replace``)."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"attack {spec.name!r} is registered already")
    unknown = [n for n in spec.norms if n not in NORMS]
    if unknown:
        raise ValueError(f"attack {spec.name!r}: unknown norm(s) {', '.join(unknown)}")
    REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered attacks, in registration order."""
    return tuple(REGISTRY)


def minimum_norm_names() -> tuple[str, ...]:
    return tuple(n for n, s in REGISTRY.items() if s.minimum_norm)


def get(name: str) -> AttackSpec:
    """The entry of ``name``; an unknown name is a one-line error listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise HahrobustError(f"unknown attack {name!r}; choose one of: {', '.join(REGISTRY)}") from None


def check_attack(attack: str, norm: str) -> tuple[str, str]:
    """The (attack, norm) pair checked: both known and the attack supports the norm."""
    spec = get(attack)
    norm = check_norm(norm)
    if norm not in spec.norms:
        supporting = [a for a, s in REGISTRY.items() if norm in s.norms]
        raise HahrobustError(
            f"{attack} does not support {norm} (it supports {', '.join(spec.norms)}); "
            f"attacks that support {norm}: {', '.join(supporting)}"
        )
    return attack, norm


def check_options(attacks: set[str] | frozenset[str], **given: Any) -> None:
    """Refuse a command-line option that none of ``attacks`` takes, naming the attacks that do
    (``--restarts applies to --attack pgd only``; ``--steps applies to pgd, fmn and ddn``)."""
    for option, value in given.items():
        if value is None:
            continue
        takers = [a for a, s in REGISTRY.items() if option in s.options]
        if not attacks <= set(takers):
            flag = "--" + option.replace("_", "-")
            if len(takers) == 1:
                raise HahrobustError(f"{flag} applies to --attack {takers[0]} only")
            listed = ", ".join(takers[:-1]) + f" and {takers[-1]}" if len(takers) > 1 else "no attack"
            raise HahrobustError(f"{flag} applies to {listed}")


class _NormsView(Mapping[str, tuple[str, ...]]):
    """``ATTACK_NORMS[name]``: the norms each registered attack supports (a live view of the registry)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return REGISTRY[name].norms

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


ATTACK_NORMS: Mapping[str, tuple[str, ...]] = _NormsView()


# ------------------------------------------------------------------------------------------ the attacks


def _prepare_autoattack(config: _autoattack.AutoAttackConfig) -> None:
    _autoattack.check_aa_version(config.version)
    _autoattack.load_autoattack()  # a missing implementation fails before any work


register(AttackSpec(
    "autoattack", tuple(_autoattack.AA_NORMS), _autoattack.AutoAttackConfig, title="AutoAttack",
    run=lambda model, x, y, *, norm, eps, indices, seed, config: _autoattack.autoattack(
        model, x, y, norm=norm, eps=eps, seed=seed, version=config.version),
    options={"aa_version": "version"}, prepare=_prepare_autoattack,
    settings=lambda config: {"aa_version": config.version}, flag=_autoattack.AutoAttackFlag,
))
register(AttackSpec(
    "pgd", NORMS, _pgd.PGDConfig, title="PGD",
    run=lambda model, x, y, *, norm, eps, indices, seed, config: _pgd.pgd(
        model, x, y, norm=norm, eps=eps, indices=indices, seed=seed, config=config),
    options={"steps": "steps", "restarts": "restarts", "loss": "loss"},
    transfer=lambda config: dataclasses.replace(config, early_stop=False),
))
register(AttackSpec(
    "fmn", NORMS, _fmn.FMNConfig, minimum_norm=True, title="FMN",
    run=lambda model, x, y, *, norm, eps, indices, seed, config: _fmn.fmn(model, x, y, norm=norm, config=config),
    options={"steps": "steps"},
))
register(AttackSpec(
    "ddn", ("l2",), _ddn.DDNConfig, minimum_norm=True, title="DDN",
    run=lambda model, x, y, *, norm, eps, indices, seed, config: _ddn.ddn(model, x, y, config=config),
    options={"steps": "steps"},
))
register(AttackSpec(
    "square", tuple(_square.SQUARE_NORMS), _square.SquareConfig, title="Square",
    run=lambda model, x, y, *, norm, eps, indices, seed, config: _square.square(
        model, x, y, norm=norm, eps=eps, indices=indices, seed=seed, config=config),
    options={"queries": "queries"},
))
# Zeroth-order: differentiates the exact model's margin by finite differences, so its breaks that plain gradients
# missed count as masking evidence. Opt-in in the audit (``--include spsa``): on the reference HaH model's
# survivors it broke nothing the default members left (docs/results/audit.md), at 256 forward passes per step.
register(AttackSpec(
    "spsa", _spsa.SPSA_NORMS, _spsa.SPSAConfig, title="SPSA",
    run=lambda model, x, y, *, norm, eps, indices, seed, config: _spsa.spsa(
        model, x, y, norm=norm, eps=eps, indices=indices, seed=seed, config=config),
    options={"steps": "steps"},
    audit=AuditRole("SPSA", kind="zeroth-order", survivors=True, default=False),
))
