"""The audit's verdict, read from per-image evidence (:func:`judge_all`, :func:`verdict`).

**The effort-controlled masking test.** Per norm and ε, on the images every plain reference member (PGD, and
AutoAttack when included) left robust, two equal-budget chains attack the same images: the gradient-changing
members (BPDA, EOT on a thresholded or randomised model, the smooth twin, zeroth-order) and their plain twins (the
same attack and per-image budget with plain gradients from fresh random starts,
:func:`hahrobust.studies.audit.plain_twin`). Each image gives a pair (broken by the gradient-changing side?, by the
plain side?), so both discordant cells are observed: b images only the gradient-changing side broke, c only the
plain side. (Pairing each twin with its member on the member's images, the next pair on what neither side broke,
would cut the twins' images on small HaH at ℓ∞ from 17 to 9, but it turns images both sides would break into
discordant ones: in the simulation of ``tests/test_masking_rule.py``'s gate it found 10 masked images 72 % of the
time instead of 80 %, so the chains stay.)
The test is the one-sided exact McNemar test of b against c (:func:`hahrobust.stats.masking_test`):
extra effort alone moves b and c together, masking moves b alone. "masked" needs b > c and the p-value significant
after Holm over every norm and ε judged in the audit. The masked share (b − c)/n comes with its paired interval.

**The gate.** The test runs twice, a weighted Bonferroni over both: on the lead pair (the first gradient-changing
member, PGD·BPDA by default, and its twin; ``LEAD_WEIGHT`` = 0.2 of α) and on the whole chain (0.8);
p = min(1, p_lead / 0.2, p_chain / 0.8). When the lead pair alone makes that p significant under any Holm family of
the audit's size (:func:`lead_decides`), the chain's other twins do not run (p_chain counts as 1, which keeps p
valid); at ℓ2 on small HaH they were ≈ 30 % of the audit's passes and broke nothing. With a single
gradient-changing member there is one test with all of α.

Why this design, and its evidence: the first rule (p = ½^m from the gradient-changing side alone) called a model
without any masking "masked" with probability 0.64 after three extra runs and ≈ 1 after twenty; with the twins the
simulated false-"masked" rate stays at or below α under any extra effort, and real masking is still found
(``tests/test_masking_rule.py``). Limits: the convergence rounds ("more effort") have no twin and are left out of
the test (they serve the worst case, not the verdict); a zeroth-order member's twin matches it in restarts, not
passes. Breaks only transfer or black-box members found are the plain attacks' weakness, reported on their own
line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hahrobust import stats
from hahrobust.attacks.norms import SYMBOLS, format_eps

if TYPE_CHECKING:  # annotations only: the verdict reads the result, it never builds one
    from hahrobust.studies.audit_result import ModelAudit


@dataclass(frozen=True)
class Judgement:
    """The masking evidence at one norm and ε: the effort-controlled test (``masking``: the cells and exact p of the
    pair that decided, named by ``pair``), its p over the gate's tests (``p_value``: weighted Bonferroni over the lead
    pair and the whole chain, :func:`lead_decides`) and Holm-adjusted over the family judged (``p_holm``, of ``tests``
    tests), and the images only transfer or black-box members found (``weak``). ``controlled``: some
    gradient-changing member ran, so the test has a plain side to compare."""

    norm: str
    eps: float
    plain_robust: int
    worst_robust: int
    n: int
    masking: stats.MaskingTest
    weak: int
    controlled: bool
    p_value: float = 1.0
    pair: str = ""
    p_holm: float = 1.0
    tests: int = 1
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        m = self.masking
        return m.adaptive_only > m.plain_only and self.p_holm <= self.alpha

    def evidence(self) -> str:
        """The test's cells, masked share and p-values, in one phrase."""
        m = self.masking
        return (f"b = {m.adaptive_only} broken only by gradient-changing attacks, c = {m.plain_only} only by their "
                f"plain twins ({self.pair}), masked share {100 * m.share:+.1f} % [{100 * m.low:+.1f}, "
                f"{100 * m.high:+.1f}] of {m.n}, exact McNemar p = {m.p_value:.2g}"
                + (f" (the gate's: {self.p_value:.2g})" if self.p_value != m.p_value else "")
                + f", Holm p = {self.p_holm:.2g} over {self.tests}")

    def line(self) -> str:
        at = f"{SYMBOLS[self.norm]} {format_eps(self.eps, self.norm)}"
        plain, worst = self.plain_robust / self.n, self.worst_robust / self.n
        parts = [f"{at}: plain {plain:.1%} → worst case {worst:.1%}"]
        if self.controlled:
            tail = "" if self.significant else (", not significant" if self.masking.adaptive_only else "")
            parts.append(self.evidence() + tail)
        else:
            parts.append("no gradient-changing attack applies (no non-differentiable layer, deterministic)")
        if self.weak:
            parts.append(f"transfer/black-box found {self.weak} more: the plain attacks are weak here")
        return "; ".join(parts)


def judge(audit: ModelAudit, alpha: float = 0.05) -> list[Judgement]:
    """Per ε: the masking evidence of one norm's audit, Holm-adjusted over its own ε only (:func:`judge_all`
    adjusts over every norm of a model)."""
    return judge_all([audit], alpha)


def judge_all(audits: Sequence[ModelAudit], alpha: float = 0.05) -> list[Judgement]:
    """Per norm and ε of one model's audits: the effort-controlled masking test (module docstring), Holm-adjusted
    over all of them."""
    raw = [j for audit in audits for j in _judge_one(audit, alpha)]
    adjusted = stats.holm([j.p_value for j in raw], alpha).adjusted if raw else ()
    return [Judgement(**{**j.__dict__, "p_holm": p, "tests": len(raw)}) for j, p in zip(raw, adjusted)]


def _judge_one(audit: ModelAudit, alpha: float) -> list[Judgement]:
    reference = audit.broken([m for m in audit.members if m.plain and not m.effort])
    gradient_changing = [m for m in audit.members if m.changes_gradient and not m.effort]
    twins = [m for m in audit.members if m.twin_of is not None]
    lead = gradient_changing[:1]
    lead_twin = [m for m in twins if lead and m.twin_of == lead[0]]
    # the whole chain is a second test only when it differs from the lead pair and every twin ran (lead_decides)
    chain = len(gradient_changing) > 1 and len(twins) == len(gradient_changing)
    other = audit.broken([m for m in audit.members
                          if not m.plain and not m.changes_gradient and m.twin_of is None and not m.effort])
    adaptive, control = audit.broken(gradient_changing), audit.broken(twins)
    tested = [(f"{lead[0].name} and its twin" if lead else "no pair", audit.broken(lead), audit.broken(lead_twin))]
    if chain:
        tested.append(("every gradient-changing member and its twin", adaptive, control))
    weights = _weights(len(gradient_changing))
    out = []
    for j, e in enumerate(audit.eps):
        base = audit.correct & ~reference[j]  # every plain reference member left these robust
        tests = [(pair, _test(a[j] & base, c[j] & base, len(base)), w) for (pair, a, c), w in zip(tested, weights)]
        pair, masking, weight = min(tests, key=lambda t: t[1].p_value / t[2])
        weak = int((other[j] & base & ~adaptive[j] & ~control[j]).sum())
        out.append(Judgement(audit.norm, e, int(base.sum()), int(audit.worst[j].sum()), len(audit.correct),
                             masking, weak, bool(gradient_changing), min(1.0, masking.p_value / weight), pair,
                             alpha=alpha))
    return out


def _test(adaptive: np.ndarray, control: np.ndarray, n: int) -> stats.MaskingTest:
    return stats.masking_test(int((adaptive & ~control).sum()), int((control & ~adaptive).sum()),
                              int((adaptive & control).sum()), n)


#: The lead pair's share of α in the gate (weighted Bonferroni; the whole chain gets the rest). Small, so that the
#: chain, the test that decided every verdict before the gate, keeps most of its power: in the simulation of
#: tests/test_masking_rule.py, 10 masked images among 40 hard ones are found 85 % of the time without a gate, 83 %
#: with this share and 80 % with equal shares; 5 of them 29, 27 and 24 %.
LEAD_WEIGHT = 0.2


def _weights(gradient_changing: int) -> tuple[float, ...]:
    """The gate's tests and their shares of α: the lead pair, and the whole chain when there is more than one
    gradient-changing member (a single member's pair is the chain: one test, all of α)."""
    return (1.0,) if gradient_changing <= 1 else (LEAD_WEIGHT, 1 - LEAD_WEIGHT)


def lead_decides(correct: np.ndarray, reference: np.ndarray, lead: np.ndarray, lead_twin: np.ndarray,
                 gradient_changing: int, family: int, alpha: float = 0.05) -> bool:
    """Whether the lead pair alone (the first gradient-changing member, PGD·BPDA by default, and its plain twin)
    already makes "masked" certain at every ε, so the other twins need not run.

    The gate: the verdict's p at a norm and ε is a weighted Bonferroni over two tests, the lead pair (share
    ``LEAD_WEIGHT`` = w of α) and the whole chain (1 − w): p = min(1, p_lead / w, p_chain / (1 − w)); a skipped
    chain counts as p_chain = 1, so p stays valid whatever decided the skip (P(p_lead ≤ w·t or p_chain ≤
    (1 − w)·t) ≤ t). The chain is skipped when p_lead / w ≤ α / ``family`` with b > c, where ``family`` is at
    least the number of tests Holm will adjust over: such a p is rejected by Holm whatever the other p's. On
    small HaH at ℓ2 the lead pair is PGD·BPDA's 14 images against 0 (p = 6·10⁻⁵), and the other five twins were
    ≈ 78 k of the audit's 266 k passes, breaking nothing; at ℓ∞ it is 5 against 0 (3 broken by both), not decisive.
    ``correct`` [N], the rest [len(eps), N]."""
    weights = _weights(gradient_changing)
    if len(weights) == 1:
        return False  # the lead pair is the chain: nothing to skip
    for j in range(reference.shape[0]):
        base = correct & ~reference[j]
        test = _test(lead[j] & base, lead_twin[j] & base, len(base))
        if not (test.adaptive_only > test.plain_only and test.p_value / weights[0] <= alpha / family):
            return False
    return True


def verdict(label: str, audits: Sequence[ModelAudit], alpha: float = 0.05) -> str:
    """One line per model: ``masked`` when the effort-controlled test is significant after Holm at some norm and
    ε; ``suspect`` when gradient-changing attacks broke more images than their twins without significance, when an
    indicator fired, or when BPDA could not run on a non-differentiable layer; else ``no sign of masking``. The
    evidence per norm and ε follows, and whether more effort converged."""
    judgements = judge_all(audits, alpha)
    evidence = "; ".join(j.line() for j in judgements)
    fired = sorted({i for a in audits for i in a.diagnostics.loc[a.diagnostics["fired"].astype(bool), "indicator"]})
    warnings = [w for a in audits for w in a.warnings]
    convergence = "; ".join(f"{SYMBOLS[a.norm]} {convergence_text(a)}{convergence_bound(a)}" for a in audits
                            if a.rounds or _has_effort(a))
    tail = f" — {evidence}" + (f"; more effort: {convergence}" if convergence else "")
    if any(j.significant for j in judgements):
        return f"{label}: masked{tail}"
    suspects = [j for j in judgements if j.masking.adaptive_only > j.masking.plain_only]
    if suspects or fired or warnings:
        most = max(j.masking.adaptive_only - j.masking.plain_only for j in suspects) if suspects else 0
        why = ([f"gradient-changing attacks broke up to {most} more image{'s' * (most != 1)} than their plain "
                "twins, not significant after Holm"] if suspects else [])
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


def convergence_bound(audit: ModelAudit, alpha: float = 0.05) -> str:
    """What a converged audit's last round shows, as a clause: its cost per survivor and the most images one more
    round like it is expected to break (:func:`hahrobust.stats.zero_breaks_bound`, at 1 − ``alpha``); empty when
    the rounds did not converge."""
    if not audit.rounds or audit.rounds[-1][1] != 0:
        return ""
    attacked = audit.rounds[-1][0]
    effort = next(m for m in audit.members if m.effort)
    # the last round's passes: rounds are counted in the order they ran ("… round r", then "… long round r")
    keys = [k for k in audit.passes if k.startswith(f"{effort.name} ") and "round" in k]
    cost = audit.passes.get(keys[-1]) if keys else None
    spent = f", {cost.total / attacked:,.0f} passes per survivor" if cost is not None else ""
    return (f" (the last round{spent}, broke 0 of {attacked}: one more is expected to break at most "
            f"{stats.zero_breaks_bound(attacked, alpha):.1f}, {100 * (1 - alpha):g} % bound)")

