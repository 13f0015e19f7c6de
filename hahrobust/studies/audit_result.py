"""One model's audit at one norm as data (:class:`ModelAudit`): what :func:`hahrobust.studies.audit.audit_model`
returns and what the verdict (:mod:`.audit_verdict`) and the tables read. A module of its own so that the audit, its
verdict and its diagnostics import it and not each other (``tests/test_house.py`` forbids import circles)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hahrobust.attacks.passes import PassCount
from hahrobust.studies.audit_members import Member


@dataclass(frozen=True)
class ModelAudit:
    """One model audited at one norm: the per-member table, the diagnostics, and the per-image evidence.

    ``correct`` [N]: classified correctly clean (one forward pass of the model itself); ``broken_by[member]``
    [len(eps), N]: the images that member broke with a verified example (monotone in ε); ``worst`` [len(eps), N]:
    robust under every member; ``plain`` [len(eps), N]: robust under the plain-gradient members only."""

    norm: str
    eps: list[float]
    members: tuple[Member, ...]
    attacks: pd.DataFrame
    diagnostics: pd.DataFrame
    correct: np.ndarray
    broken_by: dict[str, np.ndarray]
    worst: np.ndarray
    plain: np.ndarray
    passes: dict[str, PassCount]
    rounds: list[tuple[int, int]]  # more effort: (images attacked, images broken) per round
    warnings: tuple[str, ...] = ()

    def broken(self, which: Sequence[Member]) -> np.ndarray:
        """[len(eps), N]: broken by any of ``which``."""
        out = np.zeros_like(self.worst)
        for member in which:
            out |= self.broken_by[member.name]
        return out
