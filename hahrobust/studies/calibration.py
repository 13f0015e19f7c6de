"""Calibration of the audit's verdict on defences whose truth is known from outside (issue 30).

A verdict is a diagnostic test, trusted when it has been run on known positives and known negatives. The cases
(:data:`CASES`), each a checkpoint shipped in ``checkpoints/`` and retrainable with one ``hahrobust train`` line:

=====================  ===========================  =========================================================
case                   known truth                  source of the truth
=====================  ===========================  =========================================================
baseline               not robust, not masked       an undefended CNN
adversarial-training   robust, not masked           Madry et al. 2018; AutoAttack is reliable on it (Croce &
                                                    Hein 2020, RobustBench)
k-wta                  masked                       Xiao et al. 2020, broken by Tramèr et al. 2020
hah-small              masked (this project's own   hahrobust's audit (docs/results/audit.md): not an outside
                       finding)                     truth, shown for comparison
=====================  ===========================  =========================================================

Per case and norm, :func:`calibration_rows` reads the audit (plain PGD, AutoAttack, the worst case and its
convergence, the effort-controlled masking test's b, c and p) and the attack self-test (:mod:`.self_test`, run with
the audit's own gradient-based members: :func:`ensemble_attack`) into one row, with whether the verdict agrees with
the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from hahrobust.attacks.norms import format_eps
from hahrobust.data import ImageSet
from hahrobust.stats import Proportion
from hahrobust.studies.audit import AuditConfig, Member, ModelAudit, audit_model, convergence_text, default_ensemble
from hahrobust.studies.audit_verdict import Judgement
from hahrobust.studies.self_test import Attack, SelfTestResult

#: The verdict a case's truth calls for at every norm.
Expected = str  # "masked" | "no sign of masking"


@dataclass(frozen=True)
class Case:
    """A model whose masking truth is known: its checkpoint (relative to the checkpoints folder), the verdict that
    truth calls for, where the truth comes from, its transfer source, and the line that retrains it."""

    name: str
    checkpoint: str
    truth: str
    expected: Expected
    source: str
    transfer_from: str
    train: str


CASES: tuple[Case, ...] = (
    Case("baseline", "vgg16-small.safetensors", "not robust, not masked", "no sign of masking",
         "an undefended CNN (no threshold, no randomness)", "hah-vgg16-small.safetensors",
         "hahrobust train --model vgg16 --preset small"),
    Case("adversarial-training", "calibration/vgg16-adv-small.safetensors", "robust, not masked",
         "no sign of masking", "Madry et al. 2018; AutoAttack reliable on it (Croce & Hein 2020; RobustBench)",
         "vgg16-small.safetensors", "hahrobust train --model vgg16 --preset small --adversarial linf:2/255"),
    Case("k-wta", "calibration/kwta-vgg16-small.safetensors", "masked", "masked",
         "Xiao et al. 2020 (k-WTA, γ = 0.1); broken by Tramèr et al. 2020", "vgg16-small.safetensors",
         "hahrobust train --model kwta-vgg16 --preset small --epochs 30"),
    Case("hah-small", "hah-vgg16-small.safetensors", "masked (hahrobust's own audit, not an outside truth)", "masked",
         "docs/results/audit.md", "vgg16-small.safetensors", "hahrobust train --model hah-vgg16 --preset small"),
)


def case(name: str) -> Case:
    """The registered case ``name`` (a KeyError names the known ones)."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"unknown calibration case {name!r}; cases: {', '.join(c.name for c in CASES)}")


def self_test_members(ensemble: Sequence[Member] | None = None) -> tuple[Member, ...]:
    """The audit's members the self-test runs: every gradient-based one on the model itself (PGD, the BPDA
    members, EOT, the smooth twin); not AutoAttack (its targeted APGD needs ten classes, the binarized model has
    two), transfer (no source for a binarized model), black-box or the convergence rounds (cost)."""
    members = default_ensemble() if ensemble is None else ensemble
    return tuple(m for m in members if m.attack == "pgd" and not m.transfer and not m.effort)


def ensemble_attack(*, norm: str, eps: float, config: AuditConfig, seed: int, batch_size: int,
                    device: torch.device | str) -> Attack:
    """The audit's gradient-based members as a self-test attack: broken = some member found a verified example
    (the audit's own per-image union, without plain twins or rounds)."""

    def attack(binarized: nn.Module, images: ImageSet) -> np.ndarray:
        audited = audit_model(binarized, images, norm=norm, eps=[eps], ensemble=self_test_members(), config=config,
                              seed=seed, batch_size=batch_size, device=device, twins=False)
        return audited.correct & ~audited.worst[0]

    attack.__name__ = "the audit's gradient-based members"
    return attack


def verdict_at(judgement: Judgement) -> str:
    """The verdict word at one norm and ε: masked (significant after Holm), suspect (more gradient-changing than
    plain-twin breaks, not significant) or no sign of masking."""
    m = judgement.masking
    if judgement.significant:
        return "masked"
    return "suspect" if m.adaptive_only > m.plain_only else "no sign of masking"


def calibration_rows(c: Case, audits: Sequence[ModelAudit], judgements: Sequence[Judgement],
                     self_tests: dict[str, SelfTestResult]) -> pd.DataFrame:
    """One row per norm and ε of ``c``'s audit: clean, plain PGD, AutoAttack and worst-case robust accuracy with
    Wilson intervals over the images, convergence, the masking test (b, c, p, Holm p, masked share) and its verdict,
    whether it agrees with the truth, and the self-test's pass rate."""
    rows = []
    for audit in audits:
        n = len(audit.correct)
        for j, e in enumerate(audit.eps):
            judged = next(x for x in judgements if x.norm == audit.norm and x.eps == e)
            word = verdict_at(judged)
            row: dict[str, object] = {"model": c.name, "truth": c.truth, "norm": audit.norm, "eps": e,
                                      "eps_label": format_eps(e, audit.norm), "n": n}

            def accuracy(name: str, robust: np.ndarray) -> None:
                p = Proportion(int(robust.sum()), n)
                row.update({name: p.value, f"{name}_low": p.low, f"{name}_high": p.high})

            accuracy("clean", audit.correct)
            for member, column in (("PGD", "pgd"), ("AutoAttack", "autoattack")):
                if member in audit.broken_by:
                    accuracy(column, audit.correct & ~audit.broken_by[member][j])
                else:
                    row.update({column: np.nan, f"{column}_low": np.nan, f"{column}_high": np.nan})
            accuracy("worst", audit.worst[j])
            m = judged.masking
            st = self_tests.get(audit.norm)
            rate = st.rate if st is not None and st.n_valid else None
            row.update({
                "convergence": convergence_text(audit), "verdict": word, "expected": c.expected,
                "agrees": word == c.expected, "b": m.adaptive_only, "c": m.plain_only, "p": m.p_value,
                "pair": judged.pair, "p_gate": judged.p_value, "p_holm": judged.p_holm, "masked_share": m.share,
                "masked_share_low": m.low, "masked_share_high": m.high,
                "self_test": rate.value if rate else np.nan, "self_test_low": rate.low if rate else np.nan,
                "self_test_high": rate.high if rate else np.nan,
                "self_test_passed": st.passed if st is not None else 0,
                "self_test_valid": st.n_valid if st is not None else 0, "source": c.source,
            })
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["CASES", "Case", "calibration_rows", "case", "ensemble_attack", "self_test_members", "verdict_at"]
