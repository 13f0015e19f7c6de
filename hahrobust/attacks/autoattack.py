"""AutoAttack (Croce & Hein, ICML 2020) through the authors' reference implementation.

The original module ``autoattack`` (installed from github.com/fra31/auto-attack) is used when present; otherwise
the registry distribution ``pyautoattack`` (import name ``pyautoattack``, a packaged copy with a keyword-only
API). Both are driven through the same few calls, adapted to each signature.

Versions:

- ``standard``: the authors' standard ensemble (APGD-CE, APGD-T, FAB-T, Square) with their settings per norm.
- ``paper``: what the HaH paper's authors ran: ``version='custom'`` with APGD-CE and APGD-T, one restart each.

Randomness: the implementation reseeds torch's global generators on every call; we pass an explicit seed and
restore every global RNG state afterwards (:func:`~hahrobust.attacks._common.isolated_global_rng`), so the
caller's random streams are unchanged. Its random draws cover a whole batch, so — unlike PGD's per-image
starts — AutoAttack's numbers can depend on the batch size (not on anything else). Its own resumable
``state_path`` is not used (it is broken in pyautoattack); :mod:`hahrobust.attacks.journal` resumes per batch.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from hahrobust.attacks._common import AttackFlag, attack_flags, isolated_global_rng
from hahrobust.attacks.norms import check_norm
from hahrobust.errors import HahrobustError

AAVersion = Literal["standard", "paper"]
AA_VERSIONS: tuple[str, ...] = ("standard", "paper")
AA_NORMS: dict[str, str] = {"linf": "Linf", "l2": "L2", "l1": "L1"}
PAPER_ATTACKS = ("apgd-ce", "apgd-t")


@dataclass(frozen=True)
class AutoAttackConfig:
    """AutoAttack's one setting here: which ensemble (:data:`AA_VERSIONS`); the authors fix everything else."""

    version: str = "standard"


def load_autoattack() -> tuple[type, ModuleType]:
    """The ``AutoAttack`` class and its module: the original ``autoattack`` first, then ``pyautoattack``."""
    for name in ("autoattack", "pyautoattack"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "AutoAttack"):
            return module.AutoAttack, module
    raise HahrobustError(
        "AutoAttack needs the reference implementation: pip install pyautoattack "
        "(or the original: pip install git+https://github.com/fra31/auto-attack)"
    )


def check_aa_version(version: str) -> AAVersion:
    if version not in AA_VERSIONS:
        raise HahrobustError(f"unknown AutoAttack version {version!r}; choose one of: {', '.join(AA_VERSIONS)}")
    return version  # type: ignore[return-value]


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    seed: int = 0,
    version: str = "standard",
    batch_size: int | None = None,
) -> torch.Tensor:
    """AutoAttack's adversarial examples for one batch (clean images where it found none).

    ``model`` must be in eval mode and map [0, 1] images to logits. The global RNG state is restored on exit.
    """
    norm = check_norm(norm)
    version = check_aa_version(version)
    if norm not in AA_NORMS:
        raise HahrobustError(
            f"AutoAttack has no {norm} version (it supports {', '.join(AA_NORMS)}); use --attack pgd or fmn for {norm}"
        )
    if eps == 0:
        return x.detach().clone()
    device = x.device
    quiet = _Quiet()
    with isolated_global_rng(device), quiet:
        run = reference_adversary(model, norm=norm, eps=eps, seed=seed, version=version, device=device,
                                  batch_size=batch_size or len(x))
        out = run(x.detach(), y.detach())
    for message in quiet.checks:
        warnings.warn(AutoAttackFlag(message), stacklevel=2)
    x_adv = out[0] if isinstance(out, tuple) else out
    return x_adv.detach().to(x.dtype)


def reference_adversary(
    model: nn.Module, *, norm: str, eps: float, seed: int, version: str, device: torch.device | str, batch_size: int
) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """``run(x, y)``: the reference implementation's ``run_standard_evaluation`` for one configuration,
    exactly as :func:`autoattack` calls it, with nothing of ours around it (no RNG isolation, no silencing).
    The original ``autoattack`` and the ``pyautoattack`` package spell two arguments differently; both work.
    ``benchmarks/eval_throughput.py`` times it against :func:`autoattack` to measure the wrapper's cost."""
    cls, _ = load_autoattack()
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {"norm": AA_NORMS[check_norm(norm)], "eps": eps, "seed": seed, "device": device}
    if "verbose" in params:
        kwargs["verbose"] = False
    custom = check_aa_version(version) == "paper"
    if custom:
        kwargs["version"] = "custom"
        kwargs["attacks_to_run" if "attacks_to_run" in params else "attacks"] = list(PAPER_ATTACKS)
    else:
        kwargs["version"] = "standard"
    run_params = inspect.signature(cls.run_standard_evaluation).parameters
    run_kwargs = {"bs" if "bs" in run_params else "batch_size": batch_size}

    def run(x: torch.Tensor, y: torch.Tensor) -> Any:
        adversary = cls(model, **kwargs)
        if custom:  # the paper's setting: one restart each
            adversary.apgd.n_restarts = 1
            adversary.apgd_targeted.n_restarts = 1
        return adversary.run_standard_evaluation(x, y, **run_kwargs)

    return run


class AutoAttackFlag(AttackFlag):
    """One of the reference implementation's own sanity checks failed, e.g. "Square Attack has decreased the
    robust accuracy": a black-box attack found what the gradient attacks missed, a sign of gradient masking
    and of a robust accuracy that may be too high. Raised as a warning; the ``attack`` command reports each
    in its output (:func:`autoattack_flags`)."""


@contextlib.contextmanager
def autoattack_flags() -> Iterator[list[str]]:
    """Collect (each once) the messages of the :class:`AttackFlag` warnings (AutoAttack's among them) raised
    inside the block; every other warning passes through unchanged."""
    with attack_flags() as flags:
        yield flags


class _Quiet:
    """Keep the implementation's output off the terminal, but keep the messages of its sanity checks in
    ``checks``: ``pyautoattack`` logs them as warnings of the "auto-attack" logger, the checks of
    ``checks.py`` without a logger warn with the bare ``Warning`` class."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("auto-attack")
        self._saved = (self._logger.level, self._logger.propagate)
        self._logger.setLevel(logging.WARNING)  # progress (debug/info) dropped, checks (warning) kept
        self._logger.propagate = False
        self._handler = _Collect()
        self._logger.addHandler(self._handler)
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        self.checks: list[str] = []

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        self._logger.removeHandler(self._handler)
        self._logger.level, self._logger.propagate = self._saved
        warned = [str(w.message) for w in self._caught or [] if w.category is Warning]
        self.checks = list(dict.fromkeys([*self._handler.messages, *warned]))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
