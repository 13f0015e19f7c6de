"""The audit's ensemble: its members (:class:`Member`), their settings (:class:`AuditConfig`), which of them apply
to a model (:func:`members_for`), the plain twins of the masking test (:func:`plain_twin`) and the attack config
each member runs with (:func:`member_config`). :mod:`hahrobust.studies.audit` runs them; the table of members and
what each is for is in its docstring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from torch import nn

from hahrobust.attacks.autoattack import AutoAttackConfig
from hahrobust.attacks.pgd import PGDConfig
from hahrobust.attacks.registry import ATTACK_NORMS, REGISTRY, get
from hahrobust.attacks.square import SquareConfig
from hahrobust.nn.surrogate import SurrogateTypes, surrogate_layers

Kind = Literal["standard", "white-box", "adaptive", "zeroth-order", "transfer", "black-box"]
#: Norms the whole ensemble supports (AutoAttack and the black-box attacks have no ℓ0 or ℓ1 here).
AUDIT_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class Member:
    """One attack of the ensemble: a registered attack with a gradient path, a loss and where it runs."""

    name: str  # shown in tables
    kind: Kind
    attack: str  # a registered attack (hahrobust.attacks.registry)
    gradient: str = "plain"  # plain | bpda | eot | bpda+eot ("bpda" parts are dropped when there is no threshold)
    loss: str | None = None
    aa_version: str = "standard"
    transfer: bool = False  # runs on the audit's transfer source
    survivors: bool = True  # attack only the images no earlier member broke
    effort: bool = False  # the convergence rounds (AuditConfig.effort_*)
    restarts: int | None = None  # PGD restarts, instead of the audit's
    backwards: tuple[tuple[str, float], ...] = ()  # BPDA sweep: (surrogate kind, temperature) runs, per-image union
    twin: bool = False  # PGD on the model's smooth twin (sigmoid masks in the forward too), verified on the model
    default: bool = True  # in the default ensemble (False: only with --include)
    # EOT on a deterministic model without a non-differentiable layer: averaging jittered gradients is plain PGD
    # with jitter, not another gradient, so its breaks are no evidence of masking (members_for sets it).
    plain_eot: bool = False
    twin_of: Member | None = None  # a plain twin: the gradient-changing member it matches in budget (plain_twin)

    @property
    def key(self) -> str:
        """The ASCII name ``--skip`` and ``--include`` take (``PGD·BPDA·margin`` → ``pgd-bpda-margin``)."""
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-").replace("--", "-")

    @property
    def changes_gradient(self) -> bool:
        """Follows another gradient than autograd's on the exact model: its extra breaks are evidence of masking."""
        return ("bpda" in self.gradient or ("eot" in self.gradient and not self.plain_eot) or self.twin
                or self.kind == "zeroth-order")

    @property
    def plain(self) -> bool:
        """A plain-gradient member on the exact model (the reference the verdict compares with); plain twins are
        the masking test's control, not the reference."""
        return (not self.changes_gradient and not self.transfer and self.twin_of is None
                and self.kind in ("standard", "white-box", "adaptive"))


def plain_twin(member: Member) -> Member:
    """The masking test's control for a gradient-changing member: the same attack and per-image budget with plain
    gradients on the exact model, every restart from a fresh random start (:func:`member_config`), attacking the
    same images (those every plain reference member left robust). A zeroth-order member's twin is the audit's PGD
    from random starts (its budget in passes is not matched: SPSA's 256 forward passes a step buy no backward)."""
    attack = member.attack if member.attack in ("pgd", "autoattack") else "pgd"
    return Member(f"{member.name} (plain twin)", "white-box", attack, loss=member.loss, aa_version=member.aa_version,
                  restarts=member.restarts, twin_of=member)


@dataclass(frozen=True)
class AuditConfig:
    """Every setting of the audit, in one place (they go into the result's JSON and the journals' headers)."""

    pgd: PGDConfig = PGDConfig()  # 100 steps, 5 restarts (4 targeted): the toolkit's PGD
    # EOT costs (samples + 1) forward/backward passes a step: 4 samples × 50 steps × 1 restart keeps it to about
    # the cost of one full PGD run; jitter σ = 2/255, the ℓ∞ budget under test.
    eot: PGDConfig = PGDConfig(steps=50, restarts=1)
    eot_samples: int = 4
    eot_sigma: float = 2 / 255
    temperature: float = 0.1  # BPDA sigmoid width (× the channel's std)
    # Convergence (Carlini et al.: more effort must not lower robust accuracy) in two sizes of round, each repeated
    # with fresh seeds until a round breaks nothing. Short rounds: effort_restarts restarts of PGD·BPDA from random
    # starts (one untargeted with the margin loss, effort_targets towards the likeliest wrong classes, MALT's
    # choice), effort_steps × PGD's steps; they find most late breaks cheaply (6 of HaH's 10 survivors at ℓ∞ for
    # 52 k passes). Long rounds, on a thresholded model only: the same at long_steps × the steps, the untargeted
    # restart on cross-entropy, because the hard survivors broke late in long annealed runs (steps 494-768 of 800,
    # 1,320 of 1,600, in the probes of docs/results/audit.md), some only with cross-entropy, and a short round that
    # breaks nothing says nothing about those; a smooth model's plain rounds broke 0 of 17 at 4× (the baseline) and
    # skip them. The second edition's doubling rounds (steps and restarts ×2 per round, all 9 targets, ≈ 128× PGD
    # per survivor in round 3) cost 84 % of the audit's passes, ≈ 3× AutoAttack's (docs/results/audit.md).
    effort_steps: int = 4
    effort_restarts: int = 4
    effort_rounds: int = 5
    effort_targets: int = 3
    long_steps: int = 8
    long_rounds: int = 3
    unbounded_eps: dict[str, float] = field(default_factory=lambda: {"linf": 0.5, "l2": 50.0})
    unstable_radius: float = 1e-3  # ℓ∞ radius of the "tiny" noise (a quarter of a grey level)
    unstable_draws: int = 8
    alpha: float = 0.05  # masking: one-sided exact test on the images only gradient-changing members broke
    # Square on the survivors at AutoAttack's standard budget, one batched call of the reference implementation
    # (``per_image=False``: AutoAttack's own way), independent of --batch-size because it gets every image at once.
    square: SquareConfig = SquareConfig(queries=5000, per_image=False)


DEFAULT_ENSEMBLE: tuple[Member, ...] = (
    Member("AutoAttack", "standard", "autoattack", survivors=False, default=False),
    Member("PGD", "white-box", "pgd", survivors=False),
    Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda"),
    Member("PGD·BPDA·margin", "adaptive", "pgd", gradient="bpda", loss="margin", restarts=1),
    Member("APGD·BPDA", "adaptive", "autoattack", gradient="bpda", aa_version="paper"),
    Member("PGD·EOT", "adaptive", "pgd", gradient="bpda+eot"),
    Member("BPDA sweep", "adaptive", "pgd", gradient="bpda", restarts=1,
           backwards=(("sigmoid", 0.03), ("sigmoid", 0.3), ("sigmoid", 1.0), ("identity", 0.1))),
    Member("smooth twin", "adaptive", "pgd", twin=True),
    Member("transfer", "transfer", "pgd", transfer=True),
    Member("Square", "black-box", "square"),
    Member("more effort", "adaptive", "pgd", gradient="bpda", effort=True),
)
# HopSkipJump (hahrobust.attacks.decision, foolbox's decision-based attack) is validated as a library attack but
# not a member: ≈ 2,400 queries and 7–9 s per image on this CPU (benchmarks/blackbox_cost.py), where Square
# already attacks the survivors from logits.


def default_ensemble(include: Sequence[str] = ()) -> tuple[Member, ...]:
    """The members that run by default, those named in ``include`` (keys, e.g. ``autoattack``) and, before more
    effort, every registered attack whose registry entry names an audit role: a new attack joins the audit from its
    registration line."""
    extra = tuple(m for m in _registered_members() if m.default or m.key in include)
    chosen = [m for m in DEFAULT_ENSEMBLE if m.default or m.key in include]
    last = [m for m in chosen if m.effort]
    return (*[m for m in chosen if not m.effort], *extra, *last)


def all_members() -> tuple[Member, ...]:
    """Every member ``--skip`` and ``--include`` may name: the default ensemble, the opt-in ones, registered ones."""
    return default_ensemble(include=[m.key for m in (*DEFAULT_ENSEMBLE, *_registered_members())])


def _registered_members() -> tuple[Member, ...]:
    """A member for every registered attack whose registry entry names an audit role."""
    return tuple(
        Member(spec.audit.display, spec.audit.kind, spec.name, survivors=spec.audit.survivors,  # type: ignore[arg-type]
               default=spec.audit.default)
        for spec in REGISTRY.values() if spec.audit is not None
    )


#: Plain twins' seed offset: their random starts must not repeat the PGD member's restarts (same seed, same streams).
TWIN_SEED_OFFSET = 500_009


def members_for(
    model: nn.Module, ensemble: Sequence[Member], transfer_source: nn.Module | None,
    bpda_types: SurrogateTypes | None = None, stochastic: bool = False, twins: bool = True, norm: str | None = None,
) -> list[Member]:
    """The ensemble as it applies to ``model``: BPDA parts dropped (or the member skipped) without a threshold,
    EOT counted as plain on a deterministic model without one, transfer skipped without a transfer source, attacks
    the registry does not know (or that lack ``norm``) left out; with ``twins``, a plain twin (:func:`plain_twin`) of every
    gradient-changing member but the convergence rounds, after the members and before the rounds; black-box members
    after the rounds."""
    thresholded = bool(surrogate_layers(model, bpda_types))
    chosen = []
    for member in ensemble:
        if (member.transfer and transfer_source is None) or member.attack not in ATTACK_NORMS:
            continue
        if norm is not None and norm not in ATTACK_NORMS[member.attack]:
            continue
        if member.twin and not thresholded:
            continue  # a model without thresholds is its own smooth twin: plain PGD
        gradient = member.gradient
        if "bpda" in gradient and not thresholded:
            if gradient == "bpda" and not member.effort:
                continue  # identical to the plain member
            gradient = "plain" if gradient == "bpda" else "eot"
        chosen.append(replace(member, gradient=gradient, backwards=member.backwards if thresholded else (),
                              plain_eot="eot" in gradient and not thresholded and not stochastic))
    controls = [plain_twin(m) for m in chosen if twins and m.changes_gradient and not m.effort]
    # Black-box members last: on what every gradient attack, the rounds included, left (their queries cost most per
    # image, and their breaks are the "white-box ≤ black-box" indicator either way).
    last = [m for m in chosen if m.kind == "black-box"]
    return [*(m for m in chosen if not m.effort and m not in last), *controls, *(m for m in chosen if m.effort), *last]


def effort_config(config: AuditConfig, long: bool = False) -> PGDConfig:
    """A convergence round's PGD (see :class:`AuditConfig`): ``effort_restarts`` restarts from random starts,
    ``effort_targets`` of them targeted at the likeliest wrong classes, ``effort_steps`` × PGD's steps; the untargeted
    restart ascends the margin in a short round and the cross-entropy in a long one (``long``: ``long_steps`` × the
    steps), so the two sizes also differ in loss. The same in every round of a size (its randomness is its seed)."""
    return replace(config.pgd, steps=config.pgd.steps * (config.long_steps if long else config.effort_steps),
                   restarts=config.effort_restarts, targeted=min(config.effort_targets, config.effort_restarts - 1),
                   loss=None if long else "margin", clean_start=False)


def member_config(member: Member, config: AuditConfig) -> object:
    """The attack config a member runs with: PGD's from the audit's (EOT's for EOT members, its restarts, its
    loss), AutoAttack's version, Square's budget; a registered extra attack's defaults. A plain twin runs its
    member's config with every restart from a random start and the member's per-image budget as restarts: EOT's
    (samples + 1) passes a step as that many restarts, a BPDA sweep's runs as one restart each."""
    if member.twin_of is not None:
        original = member.twin_of
        if original.attack == "autoattack":
            return member_config(original, config)  # APGD starts at a random point; the twin's seed differs
        if original.attack != "pgd":
            return replace(config.pgd, clean_start=False)
        base = member_config(original, config)
        assert isinstance(base, PGDConfig)
        runs = (config.eot_samples + 1 if "eot" in original.gradient and not original.plain_eot else 1) * max(
            1, len(original.backwards))
        return replace(base, restarts=base.restarts * runs, clean_start=False)
    if member.attack == "pgd":
        pgd_config = config.eot if "eot" in member.gradient else config.pgd
        if member.restarts is not None:
            pgd_config = replace(pgd_config, restarts=member.restarts)
        if member.loss is not None:
            pgd_config = replace(pgd_config, loss=member.loss)  # type: ignore[arg-type]
        return pgd_config
    if member.attack == "autoattack":
        return AutoAttackConfig(member.aa_version)
    if member.attack == "square":
        return config.square
    return get(member.attack).default_config()


__all__ = [
    "AUDIT_NORMS", "DEFAULT_ENSEMBLE", "TWIN_SEED_OFFSET", "AuditConfig", "Kind", "Member", "all_members",
    "default_ensemble", "effort_config", "member_config", "members_for", "plain_twin",
]
