"""The report's measurements of a model pair, step by step, each kept per image (:mod:`hahrobust.report.store`).

Two class-balanced subsets of the test set (the same ``seed``): ``images`` for clean accuracy, sparsity (Fig. 2),
SNR (Fig. 3), the noise sweep (Fig. 4) and, when the budget names corruptions, CIFAR-10-C's common corruptions;
``attack_images`` for Table 1 (AutoAttack ℓ∞ 2/255 and ℓ2 0.25 beside the audit's per-image worst case, each model
the other's transfer source) and Fig. 5 (minimum-norm distances in ℓ0, ℓ1, ℓ2, ℓ∞ by FMN with plain gradients and,
for a thresholded model, through BPDA; ℓ2 also by DDN). Attacks keep
per-batch journals in ``OUT/journal`` as well, so a step killed halfway resumes per batch. Models are ``"a"`` (the
model under test) and ``"b"`` (its baseline) in the arrays' names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from hahrobust.attacks.gradients import GradientPath
from hahrobust.attacks.journal import data_fingerprint
from hahrobust.attacks.norms import DEFAULT_EPS, NORMS
from hahrobust.attacks.run import AttackRequest, RunOptions, run_attack_images
from hahrobust.data import ImageSet, balanced_subset
from hahrobust.data.cifar10c import GENERATOR_VERSION, GeneratedCorruptions
from hahrobust.data.corruptions import require_generator_libraries
from hahrobust.errors import HahrobustError
from hahrobust.evaluate.opening import LoadedModel
from hahrobust.metrics.noise import DEFAULT_SIGMAS, noise_correct
from hahrobust.metrics.snr import snr_per_image
from hahrobust.metrics.sparsity import default_block_count, hoyer_per_image
from hahrobust.models import HahrobustModel
from hahrobust.nn.surrogate import surrogate_layers
from hahrobust.provenance import git_commit, sha256_file, versions
from hahrobust.report.budget import Budget
from hahrobust.report.store import StepStore
from hahrobust.report.workers import Task, run_in_workers, step_progress
from hahrobust.studies.audit import ModelAudit, audit_model, default_ensemble, judge_all, verdict
from hahrobust.studies.paper_table import PAPER_CONDITIONS

SIDES = ("a", "b")
NOISY_SIGMA = 0.1  # Table 1's noisy column and the noise claim
SNR_SIGMA = 0.1
TABLE_EPS: dict[str, float] = {c.norm: c.eps for c in PAPER_CONDITIONS if c.norm is not None and c.eps is not None}


@dataclass(frozen=True)
class Pair:
    """The two models, the two image sets and everything a step needs."""

    models: dict[str, LoadedModel]
    stats_set: ImageSet
    attack_set: ImageSet
    budget: Budget
    seed: int
    batch_size: int
    device: torch.device
    journal: Path

    def thresholded(self, side: str) -> bool:
        return bool(surrogate_layers(self.models[side].model))


def check_pair(models: list[LoadedModel], data: ImageSet) -> None:
    """Two models that take ``data``'s images and give the same number of classes as its labels, or one line why not."""
    if len(models) != 2:
        raise HahrobustError(f"a report compares two models (MODEL BASELINE), got {len(models)}")
    probe = data.images[:1]
    classes = []
    for m in models:
        try:
            with torch.no_grad():
                out = m.model(probe.to(next(m.model.parameters()).device))
        except RuntimeError as exc:
            raise HahrobustError(f"{m.label} does not take the data's {'×'.join(map(str, probe.shape[1:]))} images "
                                 f"({str(exc).splitlines()[0]})") from None
        classes.append(int(out.shape[-1]))
        if not isinstance(m.model, HahrobustModel):
            raise HahrobustError(f"{m.label}: a report measures per-block sparsity and SNR, so it needs hahrobust "
                                 "checkpoints (not model specs)")
    if classes[0] != classes[1]:
        raise HahrobustError(f"the models give {classes[0]} and {classes[1]} classes: a report compares models of one task")
    if classes[0] < (labels := int(data.labels.max()) + 1):
        raise HahrobustError(f"the models give {classes[0]} classes, the data has {labels}")


def make_pair(models: list[LoadedModel], test: ImageSet, budget: Budget, *, seed: int, batch_size: int,
              device: torch.device, out: Path) -> Pair:
    check_pair(models, test)
    stats_set, attack_set = budget_subsets(test, budget, seed)
    return Pair(dict(zip(SIDES, models)), stats_set, attack_set, budget, seed, batch_size, device, out / "journal")


def budget_subsets(test: ImageSet, budget: Budget, seed: int) -> tuple[ImageSet, ImageSet]:
    """The class-balanced ``images`` and ``attack_images`` subsets of ``test`` (None: all of it), after checking that
    the budget fits the test set and that a budget naming corruptions has their generator's libraries (one line
    each, before any step runs)."""
    if budget.corruptions:
        require_generator_libraries()  # before any step: a missing extra is reported first
    for what, n in (("--images", budget.images), ("--attack-images", budget.attack_images)):
        if n is not None and n > len(test):
            raise HahrobustError(f"{what} {n}: the test set has {len(test)} images")
    subset = (lambda n: test if n is None else balanced_subset(test, n, seed))
    return subset(budget.images), subset(budget.attack_images)


def header(pair: Pair, threads: int) -> dict[str, Any]:
    """What changes a number (the store refuses a resume under another): budget, seed, models, images, threads."""
    return {
        "budget": pair.budget.settings(), "seed": pair.seed, "batch_size": pair.batch_size,  # AutoAttack depends on it
        # every audit setting, not only the budget's few: a changed schedule (e.g. the convergence rounds') must
        # not resume onto audit steps run under the old one
        "audit": asdict(pair.budget.audit_config()),
        "models": {s: model_id(m) for s, m in pair.models.items()},
        "images": {"stats": data_fingerprint(pair.stats_set), "attack": data_fingerprint(pair.attack_set)},
        "threads": threads,  # each step's (step_threads)
    }


def model_id(m: LoadedModel) -> dict[str, Any]:
    """A model as a step header names it: its label and its file's SHA-256 (None for an in-memory model)."""
    return {"label": m.label, "sha256": sha256_file(m.path) if m.path is not None else None}


def provenance(pair: Pair) -> dict[str, Any]:
    """The models' files, hashes and training metadata, the software versions and the git commit."""
    return {
        "models": {s: {**model_id(m), "path": str(m.path) if m.path else None, "metadata": m.metadata}
                   for s, m in pair.models.items()},
        "versions": versions(), "git_commit": git_commit(),
        "images": {"stats": pair.stats_set.source, "attack": pair.attack_set.source},
    }


# ---------------------------------------------------------------------------------------------------- steps
Step = Callable[[Pair, Progress | None], tuple[dict[str, np.ndarray], dict[str, Any]]]


def _correct(pair: Pair, data: ImageSet, m: LoadedModel, progress: Progress | None, what: str) -> np.ndarray:
    """Per image of ``data``, whether ``m`` classifies it correctly."""
    return noise_correct(m.model, data, [0.0], repeats=1, batch_size=pair.batch_size, device=pair.device,
                         progress=progress, description=f"{what} {m.label}")[0, 0]


def _clean(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {f"{s}.correct": _correct(pair, pair.stats_set, m, progress, "clean") for s, m in pair.models.items()}, {}


def _sparsity(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    blocks = default_block_count([m.model for m in pair.models.values()])  # type: ignore[misc]
    arrays = {f"{s}.hoyer": hoyer_per_image(m.model, pair.stats_set, blocks, batch_size=pair.batch_size,
                                            device=pair.device, progress=progress, description=f"sparsity {m.label}")
              for s, m in pair.models.items()}
    hah = {s: len(m.model.hah_block_names()) for s, m in pair.models.items()}  # type: ignore[union-attr]
    return arrays, {"blocks": blocks, "hah_blocks": hah}


def _snr(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {f"{s}.ratio": snr_per_image(m.model, pair.stats_set, SNR_SIGMA, repeats=pair.budget.noise_repeats,
                                          seed=pair.seed, batch_size=pair.batch_size, device=pair.device,
                                          progress=progress, description=f"SNR {m.label}")
              for s, m in pair.models.items()}
    return arrays, {"sigma": SNR_SIGMA, "repeats": pair.budget.noise_repeats}


def _noise(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {f"{s}.correct": noise_correct(m.model, pair.stats_set, DEFAULT_SIGMAS, repeats=pair.budget.noise_repeats,
                                            seed=pair.seed, batch_size=pair.batch_size, device=pair.device,
                                            progress=progress, description=f"noise {m.label}")
              for s, m in pair.models.items()}
    return arrays, {"sigmas": list(DEFAULT_SIGMAS), "repeats": pair.budget.noise_repeats}


def _corruptions(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per (corruption, severity) and image, correct or not: the ``images`` subset corrupted as CIFAR-10-C is,
    generated per image from the seed (so both models see the same corrupted images: a paired comparison)."""
    source = GeneratedCorruptions(pair.stats_set, pair.seed)
    sets = [(name, severity) for name in pair.budget.corruptions for severity in pair.budget.severities]
    arrays = {f"{s}.correct": np.zeros((len(sets), len(pair.stats_set)), dtype=bool) for s in pair.models}
    for k, (name, severity) in enumerate(sets):
        corrupted = source(name, severity)
        for s, m in pair.models.items():
            arrays[f"{s}.correct"][k] = _correct(pair, corrupted, m, progress, f"{name} {severity}")
    return arrays, {"sets": [list(x) for x in sets], "source": source.description, "generator": GENERATOR_VERSION}


def _autoattack(side: str, norm: str) -> Step:
    def run(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        m = pair.models[side]
        outcome = run_attack_images(
            m.model, pair.attack_set,
            AttackRequest("autoattack", norm, [TABLE_EPS[norm]], pair.budget.aa_config(), seed=pair.seed,
                          batch_size=pair.batch_size),
            RunOptions(pair.device, progress, pair.journal / f"autoattack-{side}-{norm}.jsonl", resume=True,
                       description=f"AutoAttack {m.label} {norm}"))
        return {"robust": outcome.robust[0], "correct": outcome.correct}, {"flags": list(outcome.flags)}
    return run


def _audit_norm(pair: Pair, side: str, norm: str, progress: Progress | None) -> ModelAudit:
    """One norm of a model's audit, every member journaled in ``pair.journal`` (a second call reads them back)."""
    m, other = pair.models[side], pair.models[SIDES[1 - SIDES.index(side)]]
    return audit_model(m.model, pair.attack_set, norm=norm, eps=[TABLE_EPS[norm]], transfer_source=other.model,
                       ensemble=default_ensemble(), config=pair.budget.audit_config(), seed=pair.seed,
                       batch_size=pair.batch_size, device=pair.device, progress=progress,
                       journal_dir=pair.journal, journal_stem=f"audit-{side}", resume=True)


def _audit(side: str) -> Step:
    def run(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        m = pair.models[side]
        audits = [_audit_norm(pair, side, norm, progress) for norm in TABLE_EPS]
        arrays = {f"{a.norm}.{k}": v[0] for a in audits for k, v in (("worst", a.worst), ("plain", a.plain))}
        arrays["correct"] = audits[0].correct
        judged = judge_all(audits)
        facts = {"verdict": verdict(m.label, audits), "members": {a.norm: [x.name for x in a.members] for a in audits},
                 "judgements": {a.norm: [j.line() for j in judged if j.norm == a.norm] for a in audits},
                 "masking": {a.norm: [j.masking.to_dict() | {"pair": j.pair, "p_gate": j.p_value, "p_holm": j.p_holm}
                                     for j in judged if j.norm == a.norm]
                             for a in audits}}
        return arrays, facts
    return run


def _minimum_norm(side: str, norm: str, attack: str, gradient: str) -> Step:
    def run(pair: Pair, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        m = pair.models[side]
        config = pair.budget.fmn_config() if attack == "fmn" else pair.budget.ddn_config()
        outcome = run_attack_images(
            m.model, pair.attack_set,
            AttackRequest(attack, norm, [DEFAULT_EPS[norm][0]], config, seed=pair.seed, batch_size=pair.batch_size,
                          gradient=GradientPath(gradient)),
            RunOptions(pair.device, progress, pair.journal / f"{attack}-{gradient}-{side}-{norm}.jsonl", resume=True,
                       description=f"{attack.upper()} {gradient} {m.label} {norm}"))
        return {"distance": outcome.distance, "correct": outcome.correct}, {}  # type: ignore[dict-item]
    return run


def plan(pair: Pair) -> dict[str, Step]:
    """Every step of the report, in the order they run."""
    steps: dict[str, Step] = {"clean": _clean, "sparsity": _sparsity, "snr": _snr, "noise": _noise}
    if pair.budget.corruptions:
        steps["corruptions"] = _corruptions
    for side in SIDES:
        for norm in TABLE_EPS:
            steps[f"autoattack-{side}-{norm}"] = _autoattack(side, norm)
    for side in SIDES:
        steps[f"audit-{side}"] = _audit(side)
    for side in SIDES:
        gradients = ("plain", "bpda") if pair.thresholded(side) else ("plain",)
        for norm in NORMS:
            for gradient in gradients:
                steps[minimum_norm_step(side, norm, "fmn", gradient)] = _minimum_norm(side, norm, "fmn", gradient)
        steps[minimum_norm_step(side, "l2", "ddn", "plain")] = _minimum_norm(side, "l2", "ddn", "plain")
    return steps


def minimum_norm_step(side: str, norm: str, attack: str, gradient: str) -> str:
    return f"{attack}-{gradient}-{side}-{norm}"


def run_steps(pair: Pair, store: StepStore, progress: Progress | None = None,
              after_step: Callable[[str], None] | None = None,
              jobs: int = 1) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Run every unfinished step (finished ones are read back): {step: {"arrays", "facts"}} and the seconds each
    step run here took (not part of the report: a resumed run would differ). ``after_step(name)`` is called after
    each step is stored or found (tests kill the run there).

    ``jobs`` > 1 runs the unfinished steps side by side in that many worker processes, the audits first (the
    longest steps, one part per norm; the rest fill the other workers meanwhile). Each step is computed exactly as
    in one process (its own seed, images and batches, :func:`step_threads` threads), so the report is the same
    file; only the per-step progress bars are not shown, the overall one names what runs and advances."""
    steps = plan(pair)
    running, finished = step_progress(progress, "report", len(steps), after_step=after_step)
    seconds: dict[str, float] = {}
    found = {name: store.get(name) for name in steps}  # each stored step read once
    todo = [name for name, record in found.items() if record is None]
    if jobs > 1 and todo:  # even one step: it must run with the threads the header records
        for name in steps:
            if name not in todo:
                finished(name)
        seconds = run_in_workers(_tasks(pair, store, todo), jobs, step_threads(jobs), running, finished, "report step")
    else:
        for name, step in steps.items():
            running([name])
            if name in todo:
                seconds[name] = _run_step(pair, store, name, step, progress)
            finished(name)
    done: dict[str, dict[str, Any]] = {}
    for name in steps:
        record = found[name] or store.get(name)  # the steps run here are read back from their files
        assert record is not None  # every step was just written or read
        done[name] = {"arrays": record[0], "facts": record[1]}
    return done, seconds


def check_jobs(jobs: int, device: torch.device) -> None:
    """``--jobs`` is at least 1, and more than one only on a CPU (a GPU is not shared out by threads)."""
    if jobs < 1:
        raise HahrobustError(f"--jobs must be at least 1, got {jobs}")
    if jobs > 1 and device.type != "cpu":
        raise HahrobustError(f"--jobs {jobs} shares a CPU's cores between steps; on {device.type} run one job")


def step_threads(jobs: int) -> int:
    """Threads each step runs with: this process's, shared out among ``jobs`` workers (at least one each). They are
    in the report's header, since a CPU's float sums, and so an attack's path, may depend on them."""
    return max(1, torch.get_num_threads() // jobs)


def _run_step(pair: Pair, store: StepStore, name: str, step: Step, progress: Progress | None) -> float:
    start = time.perf_counter()
    arrays, facts = step(pair, progress)
    store.put(name, arrays, facts)
    return time.perf_counter() - start


def _store_step(pair: Pair, store: StepStore, name: str) -> None:
    """One step computed and stored (in a worker: no progress bar, the parent's console is not this process's)."""
    _run_step(pair, store, name, plan(pair)[name], None)


def _audit_part(pair: Pair, side: str, norm: str) -> None:
    """One norm of a model's audit, into its journals: the audit step then reads both back."""
    _audit_norm(pair, side, norm, None)


def _tasks(pair: Pair, store: StepStore, todo: list[str]) -> list[Task]:
    """The unfinished steps as worker tasks, the audits (the longest steps) first, each as one part per norm."""
    tasks = []
    for name in sorted(todo, key=lambda name: not name.startswith("audit-")):  # stable: otherwise the plan's order
        parts = tuple((norm, partial(_audit_part, pair, name.removeprefix("audit-"), norm)) for norm in TABLE_EPS) \
            if name.startswith("audit-") else ()
        tasks.append(Task(name, partial(_store_step, pair, store, name), parts))
    return tasks
