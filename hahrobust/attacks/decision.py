"""A decision-based attack: HopSkipJump (Chen, Jordan & Wainwright, S&P 2020) from foolbox 3.3.4, ℓ2 and ℓ∞.

It queries only the model's top-1 decision — no gradient, no logit — so gradient masking by hard thresholds
cannot hide a nearby decision boundary from it. HopSkipJump is a minimum-distance attack: from an adversarial
starting point it walks along the boundary towards the clean image, alternating a binary search onto the
boundary, a Monte-Carlo estimate of the boundary's normal from decisions at random nearby points, and a
geometric step-size search. foolbox runs it unbounded here (``epsilons=None``).

Wrapping (what is ours, what is foolbox's):

- The model is foolbox's ``PyTorchModel`` with bounds (0, 1); the criterion is misclassification of the label.
- Starting points come from hahrobust's own per-image seeded noise (:func:`_starting_point`), never from
  foolbox's init attack (which draws from the global RNG for the whole batch): uniform noise at 32, 16, 8, 4,
  2 and 1 pixel resolution in turn (upsampled), because one noise type tends to be classified as one class.
- Each image is attacked in its own call, with torch's global generator seeded by (seed, image index) for
  foolbox's random probe directions; every global RNG state is restored afterwards. So the examples depend on
  (seed, image) only, not on the batching — foolbox's batched HopSkipJump draws one noise tensor for the whole
  batch and runs binary searches until *every* image has converged.
- ``ChunkedHopSkipJump`` (:func:`_chunked_hop_skip_jump`) changes foolbox's algorithm in two places only.
  Its gradient estimate asks the model about the random probes in chunks of ``query_batch`` instead of one
  model call per probe: same probes (same draws, same order), same arithmetic, and with ``query_batch=1``
  exactly foolbox's result (a test checks it). A chunked forward pass rounds differently from a one-image
  pass (logits differ by ~1e-6), which can flip the decision of a probe that close to the boundary — with
  γ = 1 some are — so chunked results match foolbox's statistically, not bit for bit; they are still
  deterministic (a chunk holds probes of one image only). And it can stop early: foolbox's HopSkipJump
  accepts ``early_stop`` but ignores it, so :func:`decision` stops an image at the first step that begins
  within ε.
- :func:`hop_skip_jump` returns the minimum-distance examples (their verified distances are per-image upper
  bounds on the minimal adversarial distance); :func:`decision` keeps only those within ε.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hahrobust.attacks._common import image_seed, isolated_global_rng, margin, per_image_uniform
from hahrobust.attacks.norms import check_norm, distances, project
from hahrobust.errors import HahrobustError

#: The norms foolbox's HopSkipJump minimises.
DECISION_NORMS: tuple[str, ...] = ("l2", "linf")

#: The margin (best other logit − true logit) a pushed minimum-distance point must have to count as off the
#: boundary. A forward pass of one image and of a batch differ by ~1e-6 in the logits (measured on the reference
#: models at random images: 1.2e-6 HaH, 4e-6 baseline), so a point with a smaller margin may be judged
#: differently by the verifier's batched pass; 1e-4 leaves a factor 25. (Not at a tie of a HaH top-k selection:
#: there the rounding difference flips a selection and the logits jump, by 0.12 in one measured case.)
SAFE_MARGIN = 1e-4

#: Noise resolutions tried for a starting point, in turn (pixels per side before nearest-neighbour upsampling).
#: Measured on the reference models (200 noise images each): full-resolution noise is classified as 2–3 classes
#: (the baseline VGG-16: all 200 as one class), coarse noise spreads over 6–9 classes.
START_RESOLUTIONS: tuple[int, ...] = (32, 16, 8, 4, 2, 1)


@dataclass(frozen=True)
class DecisionConfig:
    """HopSkipJump hyperparameters (all of them, in one place), sized for tens of images on a CPU.

    foolbox's defaults (64 steps, 100 → 10,000 probes per gradient estimate) cost ≈ 30,000 queries per image
    and reached 1.2× FMN's ℓ2 distance on the tiny test VGG-11; these cost ≈ 2,400 (2,250 probes, the rest
    binary and step-size searches) and reach ≈ 3× (ℓ2) / 6× (ℓ∞) FMN's distance there. Its distances keep
    shrinking with more steps: each is an *upper* bound per image.
    """

    steps: int = 10  # boundary-walk iterations (each: gradient estimate, step-size search, binary search)
    initial_evals: int = 100  # random probes for the first gradient estimate; step t uses initial·√(t+1)
    max_evals: int = 1000  # cap on probes per gradient estimate
    # γ sets the binary-search precision (γ/d^1.5 of the blend for ℓ2, γ/d² for ℓ∞) and the probe radius
    # (γ·distance/d). foolbox's default 1 measured best on the HaH reference model (10 CIFAR-10 images, this
    # budget): median ℓ2 0.64 with γ = 1 vs 2.94 with γ = 100, ℓ∞ 0.0050 vs 0.027. On the tiny test VGG-11 the
    # two tie, but only γ = 100 sees through 8-bit input quantisation (ℓ2 at 8× FMN's distance: 5/10 fooled vs
    # 0/10): its probes are then large enough to cross quantisation steps. Raise γ for models that quantise
    # their input.
    gamma: float = 1.0
    start_tries: int = 24  # seeded noise images tried per image for an adversarial starting point
    query_batch: int = 256  # probes per model call in the gradient estimate (speed; 1 = foolbox's own, see above)
    # hop_skip_jump pushes each found point this much (relative) further out (or 10×, 100× that) until its margin
    # clears SAFE_MARGIN: HopSkipJump leaves it within its binary-search precision of the boundary (ℓ∞ with γ = 1:
    # float32's resolution), where a forward pass in another batch composition (logits differ by ~1e-6) may
    # disagree.
    boundary_push: float = 1e-3


def decision(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    indices: torch.Tensor,
    seed: int = 0,
    config: DecisionConfig = DecisionConfig(),
) -> torch.Tensor:
    """HopSkipJump's adversarial examples within ε of ``x`` in ``norm`` (ℓ2 or ℓ∞), in [0, 1].

    Runs the minimum-distance attack per image, stopping it early once its boundary point is within ε (all a
    fixed-ε attack needs; later steps would only shrink the distance), then keeps only what lies within ε: per
    image, of (the clean image, HopSkipJump's point if within ε, that point moved onto the ε-sphere) the one
    with the largest margin. Moving onto the sphere is one more query: a point found beyond ε is projected
    (an in-ball try, as foolbox's ``epsilons=ε`` does), a point found inside ε is scaled out to ε, off the
    boundary where HopSkipJump leaves it and where a forward pass in another batch composition (logits
    differ by ~1e-6) can disagree. Nothing beyond ε is ever returned; the caller verifies every example.
    """
    norm = _check_decision_norm(norm)
    x, y = x.detach(), y.detach()
    if eps == 0 or len(x) == 0:
        return x.clone()
    found = _attack_each(model, x, y, norm=norm, indices=indices, seed=seed, config=config, stop_at=eps)
    delta = found - x
    size = distances(delta, norm).to(x.dtype)
    inside = size <= eps  # the float64 distance of the stored values: strictly within ε, no tolerance used
    outward = (eps / size.clamp_min(1e-30)).clamp_min(1).reshape(-1, *([1] * (x.dim() - 1)))
    on_sphere = x + project(delta * outward, x, eps, norm)
    candidates = torch.stack([x, torch.where(inside.reshape(outward.shape), found, x), on_sphere], dim=1)  # [B, 3, ...]
    with torch.no_grad():  # each image's candidates in a pass of their own, so nothing depends on the batching
        scores = torch.stack([margin(model(options), label.expand(3)) for options, label in zip(candidates, y)])
    best = scores.argmax(dim=1)  # the clean image (margin < 0) unless a candidate scores higher
    return candidates[torch.arange(len(x)), best]


def hop_skip_jump(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    indices: torch.Tensor,
    seed: int = 0,
    config: DecisionConfig = DecisionConfig(),
) -> torch.Tensor:
    """Per image, HopSkipJump's minimum-distance adversarial example (unbounded; in [0, 1]).

    Images misclassified to begin with, and images for which no seeded noise image is adversarial (no
    starting point), come back unchanged. Each found point is pushed ``config.boundary_push`` (relative)
    further from the clean image, or 10× or 100× that, to clear :data:`SAFE_MARGIN` (see
    :class:`DecisionConfig`). Verified distances (``verify(..., eps=None).distance`` where adversarial) are
    per-image upper bounds on the minimal adversarial distance in ``norm``. ``model`` must be in eval mode.
    """
    norm = _check_decision_norm(norm)
    x, y = x.detach(), y.detach()
    return _attack_each(model, x, y, norm=norm, indices=indices, seed=seed, config=config, stop_at=None)


def _attack_each(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    indices: torch.Tensor,
    seed: int,
    config: DecisionConfig,
    stop_at: float | None,
) -> torch.Tensor:
    """HopSkipJump on each image in its own seeded call (see the module docstring); ``stop_at``: stop an image
    once its boundary point is within that distance (fixed-ε use), None: run every step (minimum distance)."""
    foolbox = _foolbox()
    if min(config.steps, config.initial_evals, config.max_evals, config.start_tries, config.query_batch) < 1:
        raise ValueError("HopSkipJump needs steps, evaluations, start tries and query batch all ≥ 1")
    out = x.clone()
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=x.device)
    with isolated_global_rng(x.device), torch.no_grad():
        for i, index in enumerate(indices.tolist()):
            image, label = x[i : i + 1], y[i : i + 1]

            def is_adversarial(batch: torch.Tensor, label: torch.Tensor = label) -> torch.Tensor:
                return model(batch).argmax(dim=1) != label

            if bool(is_adversarial(image)):
                continue  # misclassified clean: distance 0, nothing to attack
            start = _starting_point(image, index, seed, config.start_tries, is_adversarial)
            if start is None:
                continue
            torch.manual_seed(image_seed(seed, index, f"decision-{norm}"))  # foolbox's probe directions
            attack = _chunked_hop_skip_jump()(
                is_adversarial, config.query_batch, image, norm, stop_at, steps=config.steps,
                initial_gradient_eval_steps=config.initial_evals, max_gradient_eval_steps=config.max_evals,
                gamma=config.gamma, constraint=norm,
            )
            try:
                found, _, _ = attack(
                    fmodel, image, foolbox.criteria.Misclassification(label), epsilons=None, starting_points=start
                )
            except _Reached as reached:
                found = reached.x_adv
            if stop_at is None and config.boundary_push > 0:
                found = _off_the_boundary(model, image, found, label, config.boundary_push)
            out[i] = found[0]
    return out


def _off_the_boundary(
    model: nn.Module, image: torch.Tensor, found: torch.Tensor, label: torch.Tensor, push: float
) -> torch.Tensor:
    """``found`` moved off the decision boundary: its perturbation scaled by 1 + push, 1 + 10·push or
    1 + 100·push (clipped to the box), the first whose margin exceeds :data:`SAFE_MARGIN`, else ``found``.

    Each candidate is judged alone, as HopSkipJump judged ``found``: on the HaH model a one-image forward pass
    and a batched one can disagree by far more than rounding at points where a top-k selection is tied — a
    pushed point chosen by a batched pass was, alone, clearly not adversarial (margins −0.05 to −0.6)."""
    for scale in (push, 10 * push, 100 * push):
        pushed = (image + (found - image) * (1 + scale)).clamp(0, 1)
        if float(margin(model(pushed), label)[0]) > SAFE_MARGIN:
            return pushed
    return found


def _starting_point(
    image: torch.Tensor, index: int, seed: int, tries: int, is_adversarial: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor | None:
    """The first seeded noise image (resolutions :data:`START_RESOLUTIONS` in turn) the model misclassifies,
    [1, C, H, W]; None when all ``tries`` are classified as the label. Depends on (seed, image index) only."""
    channels, height, width = image.shape[1:]
    for attempt in range(tries):
        side = START_RESOLUTIONS[attempt % len(START_RESOLUTIONS)]
        coarse = per_image_uniform(torch.tensor([index]), torch.Size((channels, side, side)), seed=seed,
                                   stream=f"decision-start-{attempt}")
        noise = F.interpolate(coarse, size=(height, width), mode="nearest").to(image.device, image.dtype)
        if bool(is_adversarial(noise)):
            return noise
    return None


def _check_decision_norm(norm: str) -> str:
    norm = check_norm(norm)
    if norm not in DECISION_NORMS:
        raise HahrobustError(f"HopSkipJump has no {norm} version (it supports {', '.join(DECISION_NORMS)})")
    return norm


class _Reached(Exception):
    """Raised inside HopSkipJump to stop it early: its current boundary point ``x_adv`` is within the target."""

    def __init__(self, x_adv: torch.Tensor):
        super().__init__("reached the target distance")
        self.x_adv = x_adv


def _foolbox() -> Any:
    """foolbox, imported on first use: the import takes ≈ 2 s (it imports SciPy), which every ``hahrobust``
    command would otherwise pay when it imports the attack package. Its SciPy deprecation warning
    (``scipy.ndimage.filters``, in foolbox's blur attack) is foolbox's own and kept off the user's screen."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*scipy.ndimage.filters.*")
        import foolbox
    return foolbox


@functools.cache
def _chunked_hop_skip_jump() -> type:
    """The class below, built on first use (see :func:`_foolbox`)."""
    _foolbox()
    import eagerpy as ep
    from foolbox.attacks import HopSkipJumpAttack
    from foolbox.devutils import atleast_kd, flatten

    class ChunkedHopSkipJump(HopSkipJumpAttack):
        """foolbox's HopSkipJumpAttack for one image at a time, with the gradient estimate's probes decided in
        chunks of ``query_batch`` instead of one model call per probe (see the module docstring)."""

        def __init__(
            self,
            is_adversarial: Callable[[torch.Tensor], torch.Tensor],
            query_batch: int,
            original: torch.Tensor,
            norm: str,
            stop_at: float | None,
            **kwargs: Any,
        ):
            super().__init__(**kwargs)
            self._decide, self._query_batch = is_adversarial, query_batch
            self._original, self._norm, self._stop_at = original, norm, stop_at

        def approximate_gradients(
            self, is_adversarial: Callable[[Any], Any], x_advs: Any, steps: int, delta: Any
        ) -> Any:
            if len(x_advs) != 1:
                raise ValueError("the chunked gradient estimate attacks one image per call")
            # Called first in every step with the current boundary point: where early stopping can look at it.
            # (foolbox's HopSkipJump accepts early_stop but ignores it.)
            if self._stop_at is not None:
                if float(distances(x_advs.raw - self._original, self._norm)[0]) <= self._stop_at:
                    raise _Reached(x_advs.raw)
            # From here: foolbox 3.3.4's HopSkipJumpAttack.approximate_gradients line for line, but for the decisions.
            noise_shape = tuple([steps] + list(x_advs.shape))
            if self.constraint == "l2":
                rv = ep.normal(x_advs, noise_shape)
            else:
                rv = ep.uniform(x_advs, low=-1, high=1, shape=noise_shape)
            rv /= atleast_kd(ep.norms.l2(flatten(rv, keep=1), -1), rv.ndim) + 1e-12
            scaled_rv = atleast_kd(ep.expand_dims(delta, 0), rv.ndim) * rv
            perturbed = ep.clip(ep.expand_dims(x_advs, 0) + scaled_rv, 0, 1)
            rv = (perturbed - x_advs) / atleast_kd(ep.expand_dims(delta + 1e-8, 0), rv.ndim)
            probes = perturbed.raw.reshape(steps, *x_advs.shape[1:])
            decision = torch.cat([self._decide(chunk) for chunk in probes.split(self._query_batch)])
            multipliers = ep.astensor(torch.where(decision, 1.0, -1.0).to(probes.dtype).reshape(steps, 1))
            mean = ep.mean(multipliers, axis=0, keepdims=True)
            vals = ep.where(ep.abs(mean) == 1, multipliers, multipliers - mean)
            grad = ep.mean(atleast_kd(vals, rv.ndim) * rv, axis=0)
            grad /= ep.norms.l2(atleast_kd(flatten(grad), grad.ndim)) + 1e-12
            return grad

    return ChunkedHopSkipJump
