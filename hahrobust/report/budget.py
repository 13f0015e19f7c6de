"""How much work a report does: the named budgets (the one place their defaults live) and their overrides.

=========  ======================================================================================================
budget     what it is for
=========  ======================================================================================================
quick      CI and a first look: the small pair took 5.4 minutes (220 s of CPU time, one thread) on the shared
           2-core machine at load 2.4–3.7. 100 images everywhere; AutoAttack's
           ``paper`` ensemble (APGD-CE + APGD-T, what the HaH authors ran) instead of the standard one (≈ 4 min per
           model and norm on 100 images there); the audit's ensemble with 20-step, 1-restart PGD, one convergence
           round and 500 Square queries; FMN and DDN 30 steps.
standard   what the README's tables use: 500 images for clean, sparsity, SNR and noise; 200 for the attacks;
           AutoAttack standard; the audit's own defaults; FMN and DDN 100 steps. The small pair took 39.8 minutes
           of wall time with ``--jobs 2`` on that machine (79 minutes of steps, AutoAttack's four runs 35 of them;
           the second edition's audit: 92 minutes on one thread); the medium pair 44.1 minutes of wall time with
           ``--jobs 2`` (87 minutes of steps).
full       the paper's protocol: all 10,000 test images, AutoAttack standard, the audit's defaults, FMN and DDN
           1,000 steps, and the corruption sweep (CIFAR-10-C's 15 corruptions × 5 severities, generated per
           image). GPU work.
=========  ======================================================================================================

The corruption sweep runs in quick and standard only on request (``--corruptions all``, or names and groups as
``hahrobust corruption-sweep`` takes them): generating CIFAR-10-C's 75 sets costs more CPU than the rest of a
standard report's statistics steps. Every field can be overridden (``--images``, ``--attack-images``, ``--steps``,
``--restarts``, ``--repeats``, ``--corruptions``):
:func:`resolve` returns the budget actually run, and that is what the report and its step journal record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from hahrobust.attacks.autoattack import AutoAttackConfig
from hahrobust.attacks.ddn import DDNConfig
from hahrobust.attacks.fmn import FMNConfig
from hahrobust.data.corruptions import BENCHMARK, SEVERITIES, parse_corruptions
from hahrobust.errors import HahrobustError
from hahrobust.studies.audit import AuditConfig


@dataclass(frozen=True)
class Budget:
    """The work of one report. ``images``/``attack_images`` None: the whole test set."""

    name: str
    images: int | None  # clean accuracy, sparsity, SNR, noise sweep (a class-balanced subset)
    attack_images: int | None  # Table 1 and Fig. 5 (a class-balanced subset)
    noise_repeats: int  # noise draws per image (SNR and noise sweep; the paired tests use the first)
    aa_version: str  # AutoAttack ensemble of Table 1's AutoAttack columns
    pgd_steps: int  # the audit's PGD members (EOT: half)
    pgd_restarts: int
    effort_rounds: int  # the audit's short convergence rounds (its long ones: at most as many)
    square_queries: int  # the audit's Square member
    min_norm_steps: int  # FMN and DDN
    resamples: int  # paired bootstrap and permutation test
    # CIFAR-10-C corruptions generated from the ``images`` subset (empty: no corruption step) and their severities
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = SEVERITIES

    def audit_config(self) -> AuditConfig:
        default = AuditConfig()
        return replace(
            default, pgd=replace(default.pgd, steps=self.pgd_steps, restarts=self.pgd_restarts),
            eot=replace(default.eot, steps=max(1, self.pgd_steps // 2)), effort_rounds=self.effort_rounds,
            long_rounds=min(self.effort_rounds, default.long_rounds),
            square=replace(default.square, queries=self.square_queries))

    def aa_config(self) -> AutoAttackConfig:
        return AutoAttackConfig(self.aa_version)

    def fmn_config(self) -> FMNConfig:
        return replace(FMNConfig(), steps=self.min_norm_steps)

    def ddn_config(self) -> DDNConfig:
        return replace(DDNConfig(), steps=self.min_norm_steps)

    def settings(self) -> dict[str, Any]:
        """Every field, except the two corruption fields when no corruption is generated (they change nothing then,
        and a report journaled before the corruption step existed resumes)."""
        fields = asdict(self)
        if not self.corruptions:
            del fields["corruptions"], fields["severities"]
        return fields


_AUDIT = AuditConfig()
BUDGETS: dict[str, Budget] = {
    "quick": Budget("quick", images=100, attack_images=100, noise_repeats=1, aa_version="paper", pgd_steps=20,
                    pgd_restarts=1, effort_rounds=1, square_queries=500, min_norm_steps=30,
                    resamples=2_000),
    "standard": Budget("standard", images=500, attack_images=200, noise_repeats=3, aa_version="standard",
                       pgd_steps=_AUDIT.pgd.steps, pgd_restarts=_AUDIT.pgd.restarts, effort_rounds=_AUDIT.effort_rounds,
                       square_queries=_AUDIT.square.queries, min_norm_steps=100, resamples=10_000),
    "full": Budget("full", images=None, attack_images=None, noise_repeats=3, aa_version="standard",
                   pgd_steps=_AUDIT.pgd.steps, pgd_restarts=_AUDIT.pgd.restarts, effort_rounds=_AUDIT.effort_rounds,
                   square_queries=_AUDIT.square.queries, min_norm_steps=1_000, resamples=10_000, corruptions=BENCHMARK),
}


def resolve(name: str, *, images: int | None = None, attack_images: int | None = None, steps: int | None = None,
            restarts: int | None = None, repeats: int | None = None, corruptions: str | None = None) -> Budget:
    """The named budget with the given fields replaced (``steps``: the audit's PGD and FMN/DDN both;
    ``corruptions``: names and groups as ``corruption-sweep --corruptions`` takes them, or ``none``)."""
    if name not in BUDGETS:
        raise HahrobustError(f"unknown budget {name!r}; choose one of: {', '.join(BUDGETS)}")
    for option, value in (("--images", images), ("--attack-images", attack_images), ("--steps", steps),
                          ("--restarts", restarts), ("--repeats", repeats)):
        if value is not None and value < 1:
            raise HahrobustError(f"{option} must be at least 1, got {value}")
    budget = BUDGETS[name]
    changes: dict[str, Any] = {k: v for k, v in (
        ("images", images), ("attack_images", attack_images), ("pgd_steps", steps), ("min_norm_steps", steps),
        ("pgd_restarts", restarts), ("noise_repeats", repeats)) if v is not None}
    if corruptions is not None:
        changes["corruptions"] = () if corruptions.strip() == "none" else parse_corruptions(corruptions)
    return replace(budget, **changes)
