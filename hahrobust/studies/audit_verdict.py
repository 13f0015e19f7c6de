"""The audit's verdict, read from per-image evidence (:func:`judge`, :func:`verdict`).

Per norm and ε, the images that only gradient-changing members (BPDA, EOT) broke among those every plain-gradient
member left robust are the evidence of masking; "masked" needs them to be more than chance: the one-sided exact test
of :func:`hahrobust.stats.masking_test` (p = ½^m for m such images, so m ≥ 5 at α = 0.05). Breaks only transfer or
black-box members found are the plain attacks' weakness, reported on their own line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hahrobust import stats
from hahrobust.attacks.norms import SYMBOLS, format_eps

if TYPE_CHECKING:  # the audit imports this module; its result type, for annotations only
    from hahrobust.studies.audit import ModelAudit


@dataclass(frozen=True)
class Judgement:
    """The masking evidence at one norm and ε: the images only gradient-changing members broke beyond the plain
    ones (``masking``: its exact test), and those only transfer or black-box members found (``weak``)."""

    norm: str
    eps: float
    plain_robust: int
    worst_robust: int
    n: int
    masking: stats.MaskingTest
    weak: int

    @property
    def significant(self) -> bool:
        return self.masking.adaptive_only > 0 and self.masking.p_value <= self.alpha

    alpha: float = 0.05

    def line(self) -> str:
        at = f"{SYMBOLS[self.norm]} {format_eps(self.eps, self.norm)}"
        plain, worst = self.plain_robust / self.n, self.worst_robust / self.n
        parts = [f"{at}: plain {plain:.1%} → worst case {worst:.1%}"]
        m = self.masking.adaptive_only
        if m:
            parts.append(f"{m} image{'s' * (m != 1)} only gradient-changing attacks broke (one-sided exact p = "
                         f"{self.masking.p_value:.2g}{'' if self.significant else ', not significant at this n'})")
        if self.weak:
            parts.append(f"transfer/black-box found {self.weak} more: the plain attacks are weak here")
        return "; ".join(parts)


def judge(audit: ModelAudit, alpha: float = 0.05) -> list[Judgement]:
    """Per ε: the per-image masking evidence of one model's audit (see the module docstring)."""
    plain_broken = audit.broken([m for m in audit.members if m.plain])
    adaptive_broken = audit.broken([m for m in audit.members if m.changes_gradient])
    other_broken = audit.broken([m for m in audit.members if not m.plain and not m.changes_gradient])
    out = []
    for j, e in enumerate(audit.eps):
        plain_robust = audit.correct & ~plain_broken[j]
        only_adaptive = int((adaptive_broken[j] & plain_robust).sum())
        weak = int((other_broken[j] & plain_robust & ~adaptive_broken[j]).sum())
        out.append(Judgement(audit.norm, e, int(plain_robust.sum()), int(audit.worst[j].sum()), len(audit.correct),
                             stats.masking_test(only_adaptive, int(plain_robust.sum())), weak, alpha))
    return out


def verdict(label: str, audits: Sequence[ModelAudit], alpha: float = 0.05) -> str:
    """One line per model: ``masked`` when at some norm and ε the images only gradient-changing members broke are
    significant (one-sided exact test at ``alpha``); ``suspect`` when some are but not significantly, when an
    indicator fired, or when BPDA could not run on a non-differentiable layer; else ``no sign of masking``. The
    evidence per norm and ε follows, and whether more effort converged."""
    judgements = [j for a in audits for j in judge(a, alpha)]
    evidence = "; ".join(j.line() for j in judgements)
    fired = sorted({i for a in audits for i in a.diagnostics.loc[a.diagnostics["fired"].astype(bool), "indicator"]})
    warnings = [w for a in audits for w in a.warnings]
    convergence = "; ".join(f"{SYMBOLS[a.norm]} {convergence_text(a)}" for a in audits if a.rounds or _has_effort(a))
    tail = f" — {evidence}" + (f"; more effort: {convergence}" if convergence else "")
    if any(j.significant for j in judgements):
        return f"{label}: masked{tail}"
    suspects = [j for j in judgements if j.masking.adaptive_only]
    if suspects or fired or warnings:
        most = max(j.masking.adaptive_only for j in suspects) if suspects else 0
        why = ([f"up to {most} image{'s' * (most != 1)} per ε broken only by gradient-changing attacks, not "
                "significant at this n"] if suspects else [])
        why += [f"indicators fired: {', '.join(fired)}"] if fired else []
        why += warnings
        return f"{label}: suspect ({'; '.join(why)}){tail}"
    return f"{label}: no sign of masking{tail}"


def _has_effort(audit: ModelAudit) -> bool:
    return any(m.effort for m in audit.members)


def convergence_text(audit: ModelAudit) -> str:
    """"converged after k rounds" (the last broke nothing), "every survivor broken", or "not converged: the last
    round broke m of n"."""
    if not audit.rounds:
        return "no survivors to attack" if _has_effort(audit) else "not run"
    attacked, broke = audit.rounds[-1]
    rounds = f"{len(audit.rounds)} round{'s' * (len(audit.rounds) != 1)}"
    if broke == 0:
        return f"converged after {rounds}"
    if broke == attacked:
        return f"every survivor broken after {rounds} (nothing left to attack)"
    return f"not converged: the last round broke {broke} of {attacked}"
