"""The leaderboard's measurements: per model, step by step, each kept per image in the model's own step store.

Every model is measured on the same two class-balanced subsets of the test set (one seed), so any two are compared
image by image: ``images`` for clean accuracy, Gaussian noise at σ = 0.1 and (when the budget names corruptions)
CIFAR-10-C; ``attack_images`` for AutoAttack at ℓ∞ 2/255 and ℓ2 0.25, the audit's per-image worst case at both, and
randomized smoothing's certificate at r = 0.25. Each model keeps its steps in ``OUT/models/<label>/steps`` under a
header of everything that changes its numbers, so a model added to the board later leaves the others' steps alone,
and a killed run resumes at the next unfinished step (attacks and certificates also per batch or image, in
``OUT/models/<label>/journal``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.progress import Progress

from hahrobust.attacks.journal import Journal, data_fingerprint
from hahrobust.attacks.run import AttackRequest, RunOptions, run_attack_images
from hahrobust.data import ImageSet
from hahrobust.data.cifar10c import GENERATOR_VERSION, GeneratedCorruptions
from hahrobust.errors import HahrobustError
from hahrobust.evaluate.opening import LoadedModel
from hahrobust.metrics.noise import noise_correct
from hahrobust.metrics.smoothing import certify_set
from hahrobust.metrics.smoothing import settings as smoothing_settings
from hahrobust.provenance import slug
from hahrobust.report.budget import Budget
from hahrobust.report.steps import NOISY_SIGMA, TABLE_EPS, budget_subsets, model_id
from hahrobust.report.store import StepStore
from hahrobust.report.workers import Task
from hahrobust.studies.audit import ModelAudit, audit_model, default_ensemble, verdict
from hahrobust.studies.audit_verdict import convergence_text

#: Randomized smoothing (Cohen et al. 2019) at the σ its base classifiers are trained at (``train --noise-sigma``),
#: certified at the audit's ℓ2 ε; α = 0.001 as in Cohen et al. N per budget: 500 samples can certify up to
#: σ·Φ⁻¹(0.001^(1/500)) = 0.55 > 0.25 at a tenth of the standard budget's cost.
CERTIFY_SIGMA, CERTIFY_RADIUS, CERTIFY_ALPHA, CERTIFY_N0 = 0.25, 0.25, 0.001, 100
CERTIFY_SAMPLES = {"quick": 500, "standard": 2_000, "full": 10_000}


@dataclass(frozen=True)
class Board:
    """The models (one of them the baseline), the two image sets and everything a step needs."""

    models: tuple[LoadedModel, ...]
    baseline: int  # index into models
    stats_set: ImageSet
    attack_set: ImageSet
    budget: Budget
    seed: int
    batch_size: int
    device: torch.device
    out: Path

    def folder(self, index: int) -> Path:
        return self.out / "models" / slug(self.models[index].label)

    def transfer_source(self, index: int) -> LoadedModel:
        """The model whose adversarial examples the audit transfers: the baseline's for every other model; for the
        baseline, the first other model's (as in a report, each model of a pair is the other's source)."""
        if index != self.baseline:
            return self.models[self.baseline]
        return next(m for i, m in enumerate(self.models) if i != self.baseline)

    def certify_samples(self) -> int:
        return CERTIFY_SAMPLES.get(self.budget.name, CERTIFY_SAMPLES["standard"])


def make_board(models: list[LoadedModel], baseline: int, test: ImageSet, budget: Budget, *, seed: int,
               batch_size: int, device: torch.device, out: Path) -> Board:
    """Check the models and budget against ``test`` before any step runs (one line per problem)."""
    if len(models) < 2:
        raise HahrobustError(f"a leaderboard ranks at least two models (one of them the baseline), got {len(models)}")
    labels = [m.label for m in models]
    if len({slug(label) for label in labels}) != len(labels):
        raise HahrobustError(f"the models' labels must differ (as file names too): {', '.join(labels)}")
    probe = test.images[:1].float() / 255
    for m in models:
        try:
            with torch.no_grad():
                classes = int(m.model(probe.to(device)).shape[-1])
        except RuntimeError as exc:
            raise HahrobustError(f"{m.label} does not take the data's images ({str(exc).splitlines()[0]})") from None
        if classes <= int(test.labels.max()):
            raise HahrobustError(f"{m.label} gives {classes} classes, the data has {int(test.labels.max()) + 1}")
    stats_set, attack_set = budget_subsets(test, budget, seed)
    return Board(tuple(models), baseline, stats_set, attack_set, budget, seed, batch_size, device, out)


def plan(board: Board) -> tuple[str, ...]:
    """The steps of every model, in the order they run."""
    steps = ["clean", "noise", *(f"autoattack-{norm}" for norm in TABLE_EPS), "audit", "certify"]
    return tuple(steps + (["corruptions"] if board.budget.corruptions else []))


def header(board: Board, index: int, threads: int) -> dict[str, Any]:
    """What changes one model's numbers: the budget and audit settings, seed, images, the model and its transfer
    source, the certificate's settings, the threads of each step."""
    source = board.transfer_source(index)
    return {
        "budget": board.budget.settings(), "audit": asdict(board.budget.audit_config()), "seed": board.seed,
        "batch_size": board.batch_size,  # AutoAttack depends on it
        "model": model_id(board.models[index]), "transfer_source": model_id(source),
        "images": {"stats": data_fingerprint(board.stats_set), "attack": data_fingerprint(board.attack_set)},
        "certify": smoothing_settings([CERTIFY_SIGMA], CERTIFY_N0, board.certify_samples(), CERTIFY_ALPHA, board.seed),
        "noise_sigma": NOISY_SIGMA, "threads": threads,
    }


def store(board: Board, index: int, threads: int, resume: bool) -> StepStore:
    return StepStore(board.folder(index), header(board, index, threads), resume=resume)


# ---------------------------------------------------------------------------------------------------- steps
Arrays = dict[str, np.ndarray]


def _correct(board: Board, m: LoadedModel, data: ImageSet, progress: Progress | None, what: str) -> np.ndarray:
    """Per image of ``data``, whether ``m`` classifies it correctly."""
    return noise_correct(m.model, data, [0.0], repeats=1, batch_size=board.batch_size, device=board.device,
                         progress=progress, description=f"{what} {m.label}")[0, 0]


def _clean(board: Board, m: LoadedModel, index: int, progress: Progress | None) -> tuple[Arrays, dict[str, Any]]:
    return {"correct": _correct(board, m, board.stats_set, progress, "clean")}, {}


def _noise(board: Board, m: LoadedModel, index: int, progress: Progress | None) -> tuple[Arrays, dict[str, Any]]:
    """One seeded draw of N(0, 0.1²) per image, the same draw for every model (a paired comparison)."""
    correct = noise_correct(m.model, board.stats_set, [NOISY_SIGMA], repeats=1, seed=board.seed,
                            batch_size=board.batch_size, device=board.device, progress=progress,
                            description=f"noise {m.label}")[0, 0]
    return {"correct": correct}, {"sigma": NOISY_SIGMA}


def _autoattack(norm: str) -> Callable[..., tuple[Arrays, dict[str, Any]]]:
    def run(board: Board, m: LoadedModel, index: int, progress: Progress | None) -> tuple[Arrays, dict[str, Any]]:
        outcome = run_attack_images(
            m.model, board.attack_set,
            AttackRequest("autoattack", norm, [TABLE_EPS[norm]], board.budget.aa_config(), seed=board.seed,
                          batch_size=board.batch_size),
            RunOptions(board.device, progress, board.folder(index) / "journal" / f"autoattack-{norm}.jsonl",
                       resume=True, description=f"AutoAttack {m.label} {norm}"))
        return {"robust": outcome.robust[0], "correct": outcome.correct}, {"flags": list(outcome.flags)}
    return run


def audit_norm(board: Board, index: int, norm: str, progress: Progress | None) -> ModelAudit:
    """One norm of a model's audit, every member journaled (a second call reads them back)."""
    m = board.models[index]
    return audit_model(m.model, board.attack_set, norm=norm, eps=[TABLE_EPS[norm]],
                       transfer_source=board.transfer_source(index).model, ensemble=default_ensemble(),
                       config=board.budget.audit_config(), seed=board.seed, batch_size=board.batch_size,
                       device=board.device, progress=progress, journal_dir=board.folder(index) / "journal",
                       journal_stem="audit", resume=True)


def _audit(board: Board, m: LoadedModel, index: int, progress: Progress | None) -> tuple[Arrays, dict[str, Any]]:
    audits = [audit_norm(board, index, norm, progress) for norm in TABLE_EPS]
    arrays = {f"{a.norm}.{k}": v[0] for a in audits for k, v in (("worst", a.worst), ("plain", a.plain))}
    arrays["correct"] = audits[0].correct
    line = verdict(m.label, audits)
    facts = {"verdict": line, "word": line.split(" — ", 1)[0].removeprefix(f"{m.label}: "),
             "convergence": {a.norm: convergence_text(a) for a in audits},
             "converged": {a.norm: _converged(a) for a in audits}}
    return arrays, facts


def _converged(audit: ModelAudit) -> bool:
    """The last convergence round broke nothing, or nothing was left to attack."""
    return not audit.rounds or audit.rounds[-1][1] in (0, audit.rounds[-1][0])


def _certify(board: Board, m: LoadedModel, index: int, progress: Progress | None) -> tuple[Arrays, dict[str, Any]]:
    n = board.certify_samples()
    header = {"command": "leaderboard-certify", **smoothing_settings([CERTIFY_SIGMA], CERTIFY_N0, n, CERTIFY_ALPHA,
                                                                     board.seed),
              "model": model_id(m), "data": data_fingerprint(board.attack_set)}
    journal = Journal(board.folder(index) / "journal" / "certify.jsonl", header, resume=True)
    images = certify_set(m.model, board.attack_set, [CERTIFY_SIGMA], n0=CERTIFY_N0, n=n, alpha=CERTIFY_ALPHA,
                         batch_size=max(board.batch_size, 100), seed=board.seed, device=board.device, journal=journal,
                         progress=progress, description=f"certify {m.label}")
    correct = images["correct"].to_numpy()
    return ({"certified": correct & (images["radius"].to_numpy() >= CERTIFY_RADIUS), "correct": correct},
            {"sigma": CERTIFY_SIGMA, "radius": CERTIFY_RADIUS, "n0": CERTIFY_N0, "n": n, "alpha": CERTIFY_ALPHA})


def _corruptions(board: Board, m: LoadedModel, index: int, progress: Progress | None) -> tuple[Arrays, dict[str, Any]]:
    """Per (corruption, severity) and image, correct or not, on CIFAR-10-C generated per image from the seed."""
    source = GeneratedCorruptions(board.stats_set, board.seed)
    sets = [(name, severity) for name in board.budget.corruptions for severity in board.budget.severities]
    correct = np.zeros((len(sets), len(board.stats_set)), dtype=bool)
    for k, (name, severity) in enumerate(sets):
        correct[k] = _correct(board, m, source(name, severity), progress, f"{name} {severity}")
    return {"correct": correct}, {"sets": [list(x) for x in sets], "generator": GENERATOR_VERSION}


STEPS: dict[str, Callable[..., tuple[Arrays, dict[str, Any]]]] = {
    "clean": _clean, "noise": _noise, **{f"autoattack-{norm}": _autoattack(norm) for norm in TABLE_EPS},
    "audit": _audit, "certify": _certify, "corruptions": _corruptions,
}


def run_step(board: Board, store: StepStore, index: int, name: str, progress: Progress | None = None) -> float:
    """Compute one step of one model and put it in the model's ``store``; its seconds."""
    start = time.perf_counter()
    arrays, facts = STEPS[name](board, board.models[index], index, progress)
    store.put(name, arrays, facts)
    return time.perf_counter() - start


def _audit_part(board: Board, index: int, norm: str) -> None:
    audit_norm(board, index, norm, None)


def step_label(board: Board, index: int, name: str) -> str:
    """A (model, step) pair as the progress bar and the seconds name it: ``"HaH audit"``."""
    return f"{board.models[index].label} {name}"


def tasks(board: Board, stores: list[StepStore], todo: list[tuple[int, str]]) -> list[Task]:
    """Unfinished (model, step) pairs as worker tasks: the audits first (the longest steps), each one part per norm."""
    ordered = sorted(todo, key=lambda item: item[1] != "audit")
    return [Task(step_label(board, i, name), partial(run_step, board, stores[i], i, name),
                 tuple((norm, partial(_audit_part, board, i, norm)) for norm in TABLE_EPS) if name == "audit" else ())
            for i, name in ordered]
