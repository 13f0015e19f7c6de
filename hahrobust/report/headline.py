"""A report's headline claims as rows of cells, shared by the report's page (:mod:`.page`) and the summary script
(:mod:`.summary`), which is run as ``python -m`` and so is not imported by the package."""

from __future__ import annotations

import math
from typing import Any

#: The claims of the headline, in order: the paper's sparsity, noise, clean-cost and AutoAttack claims, and the one
#: the audit adds (the worst case under adaptive attack), at ℓ∞ (ℓ2 and the rest are in the report).
HEADLINE = ("sparser", "noise", "clean-cost", "autoattack-linf", "worst-linf")


def _value(value: Any, accuracy: bool) -> str:
    v = float(value)
    if math.isnan(v):
        return "—"
    return f"{100 * v:.1f} %" if accuracy else f"{v:.3g}"


def _p(value: Any) -> str:
    v = float(value)
    return "—" if math.isnan(v) else f"{v:.2g}"


HEADER = ("claim (A vs B)", "A", "B", "effect in the claimed direction [95 % CI]", "n", "p (Holm)", "verdict")


def headline_rows(claims: list[dict[str, Any]], keys: tuple[str, ...] = HEADLINE) -> list[tuple[str, ...]]:
    """One row of :data:`HEADER`'s cells per claim of ``keys``, from a report's claim rows (``report.json``'s
    ``claims``): claim, A, B, effect with its 95 % interval, n, Holm-adjusted p and the verdict."""
    found = {c["claim"]: c for c in claims}
    missing = [k for k in keys if k not in found]
    if missing:
        raise KeyError(f"the report has no claim {', '.join(missing)}")
    rows = []
    for key in keys:
        c = found[key]
        accuracy = c["measure"] == "accuracy"
        scale = 100 if accuracy else 1
        unit = " points" if accuracy else ""
        effect = f"{scale * float(c['effect']):+.3g} [{scale * float(c['low']):+.3g}, {scale * float(c['high']):+.3g}]{unit}"
        rows.append((c["text"], _value(c["a"], accuracy), _value(c["b"], accuracy), effect, str(c["n"]),
                     _p(c["p_holm"]), c["verdict"]))
    return rows


