"""Tables 1 and 2's columns keep their per-image outcomes (hahrobust.studies.paper_table): the paired tests of Table
2 rest on them, so each must be the outcome its column's accuracy counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hahrobust.data import balanced_subset, load_cifar10
from hahrobust.studies import audit as audit_module
from hahrobust.studies.audit import WORST
from hahrobust.studies.paper_table import audited_columns, paper_table
from tests.conftest import train_tiny_vgg11


@pytest.mark.usefixtures("one_thread_per_module")
def test_per_image_outcomes_are_what_each_column_counts(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = load_cifar10(tiny_data, "train")
    test = balanced_subset(load_cifar10(tiny_data, "test"), 20, 0)
    model = train_tiny_vgg11(train, epochs=4, hah=True).eval()
    cheap = tuple(m for m in audit_module.DEFAULT_ENSEMBLE if m.key in ("pgd", "pgd-bpda"))
    monkeypatch.setattr(audit_module, "default_ensemble", lambda include=(): cheap)
    audits: dict[str, object] = {}
    original = audit_module.audit_model

    def keep(*args, **kwargs):
        audits[kwargs["norm"]] = original(*args, **kwargs)
        return audits[kwargs["norm"]]

    monkeypatch.setattr(audit_module, "audit_model", keep)
    run, adaptive = audited_columns(model, test, attack="pgd")
    table = paper_table(model, test, run=run, adaptive=adaptive, per_image=True)
    rows = table.rows.set_index("short")["accuracy"]
    assert set(table.outcomes) == set(rows.index)
    for short, outcome in table.outcomes.items():
        assert outcome.dtype == bool and outcome.shape == (20,)
        assert outcome.mean() == pytest.approx(rows[short]), short  # the column counts exactly these images
    for norm, short in (("linf", "Worst ℓ∞"), ("l2", "Worst ℓ2")):
        worst = audits[norm].attacks.set_index("attack").loc[WORST, "robust_acc"]
        assert rows[short] == pytest.approx(worst)
    assert np.all(table.outcomes["Worst ℓ∞"] <= table.outcomes["Adv ℓ∞"])  # the worst case is under every member
    assert paper_table(model, test, run=run, adaptive=adaptive).outcomes == {}  # kept only when asked
