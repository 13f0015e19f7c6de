"""The attack self-test: can the attack find an adversarial example that is known to exist? (binarization test)

Zimmermann, Brendel, Tramèr & Carlini (NeurIPS 2022, arXiv 2206.13991), "Increasing confidence in adversarial
robustness evaluations". Per clean image x they keep the evaluated model's feature extractor f (everything before its
last linear layer) and replace the readout by a *binary* linear one, fitted on f's features of x and random "inner"
points of the ball of radius (1 − gap)·ε (label 0) against a "boundary" point at distance ε (label 1). If the fit
separates them, the binarized model f + readout has an adversarial example inside the ε-ball by construction (the
boundary point), so an attack that fails on it fails to find an example that exists: its robust accuracy on the
defence is not to be trusted. The test's score is the attack's success rate over the images whose readout fitted.

Here (as in their reference code ``active_tests/decision_boundary_binarization.py``): inner points uniform in the
ℓ∞ box or ℓ2 ball of radius (1 − ``gap``)·ε (gap 0.05), one boundary point at ε (ℓ∞: a uniform direction rescaled to
‖δ‖∞ = ε; ℓ2: uniform on the sphere), x itself among the inner points, a perfect fit required or the image is
skipped. Where this differs:

- the readout is an L2-light logistic regression in float64 (torch L-BFGS, no sklearn) whose bias is then put
  halfway between the highest inner score and the boundary score, and scaled so those two score −1 and +1 (their
  default keeps logistic regression's bias and rescales the logit range to 1);
- boundary coordinates that would leave [0, 1] are mirrored (−δ) instead of rescaled, so the point stays at distance
  ε, and it is shrunk by a hair where float32 rounding would put it beyond ε: it is always a valid example;
- all images share ONE module, :class:`BinarizedModel`: each input row uses the readout of its nearest clean image
  (anchor); inputs stay within ε of their own anchor and anchors closer than 2 ball radii are skipped, so the choice is
  constant inside each ball and carries no gradient. hahrobust's batched attacks and verification then run unchanged;
- a random baseline (their "random ASR"): ``probes`` further random boundary points per image; if one is classified 1
  the planted example is easy to stumble on and the image says little about the attack (``random_hit``);
- x must be classified correctly by the model (``require_correct``), and seeds are per image (``seeding``), so the
  result does not depend on the batch size.

Evidence (``tests/test_self_test.py``): the planted point is within ε and classified 1 while x is 0; PGD passes on a
smooth net; plain PGD fails on a net that rounds its input (zero gradient) while straight-through BPDA passes; two
batch sizes give the same table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from hahrobust.attacks._common import eval_mode
from hahrobust.attacks.gradients import GradientPath
from hahrobust.attacks.norms import SYMBOLS, distances, format_eps
from hahrobust.attacks.pgd import PGDConfig
from hahrobust.attacks.run import AttackRequest, RunOptions, run_attack_images
from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.nn.surrogate import SurrogateTypes
from hahrobust.seeding import derived_seed
from hahrobust.stats import Proportion

Attack = Callable[[nn.Module, ImageSet], np.ndarray]
SELF_TEST_NORMS = ("linf", "l2")


# ------------------------------------------------------------------------------------------- feature extractor


class PenultimateFeatures(nn.Module):
    """The flattened *input* of ``model.<layer>`` (default ``classifier``: hahrobust's VGG and hebb-net), computed by
    running ``model`` itself, so every module of the model (its thresholds included) stays inside this one and BPDA
    still finds them. The last layer's own cost (one linear map) is the only waste."""

    def __init__(self, model: nn.Module, layer: str = "classifier") -> None:
        super().__init__()
        modules = dict(model.named_modules())
        if layer not in modules or layer == "":
            raise HahrobustError(f"the model has no module {layer!r} whose input could be its features")
        self.model, self.layer = model, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = dict(self.model.named_modules())[self.layer].register_forward_pre_hook(
            lambda _m, inputs: captured.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise HahrobustError(f"module {self.layer!r} ran {len(captured)} times in one forward pass (expected once)")
        return captured[0].flatten(1)


def feature_extractor(model: nn.Module, features: nn.Module | str | None = None) -> nn.Module:
    """The model's penultimate representation as a module: ``features`` itself when it is a module (the user's own),
    the input of the named layer when a string, else the input of ``model.classifier`` (hahrobust models) or of an
    ``nn.Sequential``'s last module."""
    if isinstance(features, nn.Module):
        return features
    if isinstance(features, str):
        return PenultimateFeatures(model, features)
    if isinstance(getattr(model, "classifier", None), nn.Module):
        return PenultimateFeatures(model, "classifier")
    if isinstance(model, nn.Sequential) and len(model) > 1:
        return PenultimateFeatures(model, str(len(model) - 1))
    raise HahrobustError(
        f"cannot find the feature extractor of {type(model).__name__}: pass features= (a module, or the name of the "
        "layer whose input is the penultimate representation)")


# --------------------------------------------------------------------------------------------- the binarized model


class BinarizedModel(nn.Module):
    """One binarized model for many images: row r's logits are [−z/2, z/2], z = w_k·f(x_r) + b_k, with k the anchor
    (clean image) nearest to x_r in ℓ2. ``features`` is the model's own extractor (BPDA sees its thresholds)."""

    def __init__(self, features: nn.Module, anchors: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor) -> None:
        super().__init__()
        if not (len(anchors) == len(weights) == len(biases)) or weights.dim() != 2:
            raise ValueError(f"anchors, weights [N, d] and biases [N] disagree: {anchors.shape}, {weights.shape}, "
                             f"{biases.shape}")
        self.features = features
        self.register_buffer("anchors", anchors.float())
        self.register_buffer("weights", weights.float())
        self.register_buffer("biases", biases.float())

    def anchor_of(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest anchor of each row (no gradient: a constant inside each ε-ball)."""
        with torch.no_grad():
            flat = x.detach().flatten(1).float()
            return torch.cdist(flat, self.anchors.flatten(1), compute_mode="donot_use_mm_for_euclid_dist").argmin(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.anchor_of(x)
        z = (self.features(x).flatten(1) * self.weights[k]).sum(1) + self.biases[k]
        return torch.stack([-z / 2, z / 2], dim=1)


# ------------------------------------------------------------------------------------------------------ sampling


def _generator(seed: int, stream: str, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed("self-test", stream, seed, index))


def _inner_points(x: torch.Tensor, n: int, norm: str, radius: float, g: torch.Generator) -> torch.Tensor:
    """n points uniform in the ℓ∞ box / ℓ2 ball of ``radius`` around x [C, H, W], clipped to [0, 1] (which only
    brings them closer)."""
    if norm == "linf":
        delta = (2 * torch.rand((n, *x.shape), generator=g) - 1) * radius
    else:
        direction = torch.randn((n, *x.shape), generator=g)
        direction /= direction.flatten(1).norm(dim=1).view(-1, *[1] * x.dim())
        scale = torch.rand(n, generator=g).pow(1 / x.numel()) * radius
        delta = direction * scale.view(-1, *[1] * x.dim())
    return (x + delta).clamp(0, 1)


def _surface_points(x: torch.Tensor, n: int, norm: str, eps: float, g: torch.Generator) -> torch.Tensor:
    """n points at distance ε from x (up to clipping): ℓ∞ a uniform direction rescaled to ‖δ‖∞ = ε, ℓ2 uniform on
    the sphere; coordinates that would leave [0, 1] are mirrored; never beyond ε even after float32 rounding."""
    if norm == "linf":
        delta = 2 * torch.rand((n, *x.shape), generator=g) - 1
        delta /= delta.flatten(1).abs().amax(dim=1).view(-1, *[1] * x.dim())
    else:
        delta = torch.randn((n, *x.shape), generator=g)
        delta /= delta.flatten(1).norm(dim=1).view(-1, *[1] * x.dim())
    delta = delta * eps
    mirrored = torch.where(((x + delta) > 1) | ((x + delta) < 0), -delta, delta)
    points = (x + mirrored).clamp(0, 1)
    dist = distances(points - x, norm)
    over = dist > eps
    if over.any():  # float32 rounding put a point a hair beyond ε: shrink its perturbation
        shrink = (eps * (1 - 1e-6) / dist[over]).float().view(-1, *[1] * x.dim())
        points[over] = (x + (points[over] - x) * shrink).clamp(0, 1)
    return points


# --------------------------------------------------------------------------------------------------- the readout


def fit_readout(inner: torch.Tensor, boundary: torch.Tensor, *, l2: float = 1e-6, iterations: int = 500
                ) -> tuple[torch.Tensor, float] | None:
    """A linear readout (w [d], b) on features, with every ``inner`` row [n, d] scoring ≤ −1 and ``boundary`` [d]
    +1, or None when logistic regression does not separate them. Fitted in float64 on standardized features by L-BFGS
    (deterministic on the CPU); then b is put halfway between the highest inner score and the boundary's and (w, b)
    scaled so those are exactly −1 and +1."""
    f_in, f_b = inner.detach().double().cpu(), boundary.detach().double().cpu()
    if not (torch.isfinite(f_in).all() and torch.isfinite(f_b).all()):
        return None
    mu = f_in.mean(0)
    sd = torch.cat([f_in, f_b[None]]).std(0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    z_in, z_b = (f_in - mu) / sd, (f_b - mu) / sd
    v = torch.zeros(f_in.shape[1], dtype=torch.float64, requires_grad=True)
    c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([v, c], lr=1, max_iter=iterations, tolerance_grad=1e-12, tolerance_change=1e-14,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (nn.functional.softplus(z_in @ v + c).mean() + nn.functional.softplus(-(z_b @ v + c))
                + l2 / 2 * v.pow(2).sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    w = (v.detach() / sd)
    s_in, s_b = f_in @ w, float(f_b @ w)
    top = float(s_in.max())
    if not (math.isfinite(s_b) and s_b > top) or not torch.isfinite(w).all():
        return None
    half = (s_b - top) / 2
    return w / half, -(top + half) / half


# ----------------------------------------------------------------------------------------------------- binarize


@dataclass(frozen=True)
class Binarization:
    """The binarized model and what went into it, one row per sampled image (in sampling order): ``index`` into the
    data, ``valid`` (readout fitted, x classified 0 and the boundary point 1 by ``model``), ``reason`` when not,
    the boundary points [n, C, H, W] and their distances, and how many random surface probes ``model`` classifies 1."""

    model: BinarizedModel
    index: np.ndarray
    valid: np.ndarray
    reason: tuple[str, ...]
    clean: torch.Tensor  # uint8 [n, C, H, W], the sampled images as the data holds them
    boundary: torch.Tensor
    boundary_distance: np.ndarray
    random_hits: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def image_set(self, source: str = "self-test") -> ImageSet:
        """The valid images, all labelled 0 (the class an attack must move them out of)."""
        images = self.clean[torch.as_tensor(self.valid)]
        return ImageSet(images, torch.zeros(len(images), dtype=torch.int64), source)


def _choose(model: nn.Module, data: ImageSet, images: int, seed: int, require_correct: bool, batch_size: int,
            device: torch.device) -> np.ndarray:
    """``images`` indices in a seeded order of the data, skipping images the model misclassifies (if asked)."""
    order = np.random.default_rng(derived_seed("self-test", "images", seed)).permutation(len(data))
    if not require_correct:
        return order[:images]
    chosen: list[int] = []
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            part = order[start:start + batch_size]
            x = data.images[torch.as_tensor(part)].to(device).float() / 255
            correct = (model(x).argmax(1).cpu() == data.labels[torch.as_tensor(part)]).numpy()
            chosen.extend(part[correct].tolist())
            if len(chosen) >= images:
                break
    return np.asarray(chosen[:images], dtype=np.int64)


def binarize(
    model: nn.Module, data: ImageSet, *, norm: str, eps: float, images: int, seed: int, inner: int = 100,
    gap: float = 0.05, probes: int = 16, features: nn.Module | str | None = None, require_correct: bool = True,
    batch_size: int = 100, device: torch.device | str = "cpu",
) -> Binarization:
    """Binarize ``model`` around ``images`` clean images of ``data`` (see the module docstring): per image x, ``inner``
    points in the ball of radius (1 − gap)·ε and x itself as class 0, one boundary point at ε as class 1, a linear
    readout on the model's features (:func:`feature_extractor`), and ``probes`` random surface points as a baseline.
    Features are computed per image (inner + 2 rows in one pass), so ``batch_size`` only bounds the image selection."""
    if norm not in SELF_TEST_NORMS:
        raise HahrobustError(f"the self-test supports {', '.join(SELF_TEST_NORMS)}, not {norm}")
    if not 0 < eps <= 0.5 or not 0 <= gap < 1 or inner < 1 or images < 1 or probes < 0:
        raise HahrobustError(f"bad self-test settings: eps={eps}, gap={gap}, inner={inner}, images={images}, "
                             f"probes={probes}")
    device = torch.device(device)
    extractor = feature_extractor(model, features)
    with eval_mode(model), eval_mode(extractor):
        index = _choose(model, data, images, seed, require_correct, batch_size, device)
        if len(index) == 0:
            raise HahrobustError("the self-test found no image to binarize (none classified correctly?)")
        clean_u8 = data.images[torch.as_tensor(index)]
        clean = clean_u8.float() / 255
        dim = clean[0].numel()
        radius = eps * math.sqrt(dim) if norm == "linf" else eps  # the ball's ℓ2 radius, for the anchor choice
        pairwise = torch.cdist(clean.flatten(1), clean.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
        n = len(index)
        reasons = [""] * n
        boundary = torch.empty_like(clean)
        fitted: list[tuple[torch.Tensor, float] | None] = []
        for i in range(n):
            if (pairwise[i, :i] <= 2 * radius * (1 + 1e-4)).any():
                reasons[i] = "near another image"  # its ball could reach another image's readout
            boundary[i] = _surface_points(clean[i], 1, norm, eps, _generator(seed, "boundary", int(index[i])))[0]
            if reasons[i]:
                fitted.append(None)
                continue
            points = torch.cat([clean[i:i + 1], _inner_points(clean[i], inner, norm, (1 - gap) * eps,
                                                               _generator(seed, "inner", int(index[i]))),
                                boundary[i:i + 1]])
            with torch.no_grad():
                f = extractor(points.to(device)).flatten(1).cpu()
            readout = fit_readout(f[:-1], f[-1])
            if readout is None:
                reasons[i] = "not separable"
            fitted.append(readout)
        d = next((w.numel() for w in (r[0] for r in fitted if r is not None)), 1)
        weights = torch.stack([r[0].float() if r is not None else torch.zeros(d) for r in fitted])
        biases = torch.tensor([r[1] if r is not None else -1.0 for r in fitted], dtype=torch.float32)
        keep = torch.tensor([r != "near another image" for r in reasons])
        binarized = BinarizedModel(extractor, clean[keep], weights[keep], biases[keep]).to(device)
        hits = np.zeros(n, dtype=np.int64)
        with eval_mode(binarized), torch.no_grad():
            for i in range(n):
                if reasons[i]:
                    continue
                pred = binarized(torch.stack([clean[i], boundary[i]]).to(device)).argmax(1).cpu().tolist()
                if pred != [0, 1]:
                    reasons[i] = "x not class 0" if pred[0] != 0 else "boundary not class 1"
                    continue
                if probes:
                    sample = _surface_points(clean[i], probes, norm, eps, _generator(seed, "probes", int(index[i])))
                    hits[i] = int(binarized(sample.to(device)).argmax(1).sum())
    valid = np.array([r == "" for r in reasons])
    settings = {"norm": norm, "eps": eps, "images": images, "seed": seed, "inner": inner, "gap": gap,
                "probes": probes, "require_correct": require_correct}
    return Binarization(binarized, index, valid, tuple(reasons), clean_u8, boundary,
                        distances(boundary - clean, norm).numpy(), hits, settings)


# ----------------------------------------------------------------------------------------------------- self-test


@dataclass(frozen=True)
class SelfTestResult:
    """The binarization test's outcome: per sampled image (``table``) whether it was valid and whether the attack
    found a verified adversarial example of the binarized model (``passed``); the pass rate over the valid images
    with its Wilson interval."""

    table: pd.DataFrame
    settings: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.table)

    @property
    def n_valid(self) -> int:
        return int(self.table["valid"].sum())

    @property
    def skipped(self) -> int:
        return self.n - self.n_valid

    @property
    def passed(self) -> int:
        return int(self.table["passed"].sum())

    @property
    def rate(self) -> Proportion:
        """Passed of valid, with the Wilson interval (NaN for no valid image)."""
        return Proportion(self.passed, self.n_valid)

    @property
    def random_rate(self) -> Proportion:
        """Valid images where a random surface probe already hit class 1 (the paper's random baseline: high means
        the planted example is easy to stumble on, and passing says little)."""
        valid = self.table[self.table["valid"]]
        return Proportion(int((valid["random_hits"] > 0).sum()), len(valid))

    def trustworthy(self, threshold: float = 0.95) -> bool:
        """True when at least one image was valid and the attack found the planted example on ≥ ``threshold`` of
        them (the point estimate; ``rate.low`` is the conservative reading)."""
        return self.n_valid > 0 and self.rate.value >= threshold

    def line(self) -> str:
        """``self-test ℓ∞ 2/255: attacks found the planted example on 19 of 20 images (95 % [76, 99]); 0 skipped``."""
        norm, eps = self.settings["norm"], self.settings["eps"]
        head = f"self-test {SYMBOLS[norm]} {format_eps(eps, norm)}"
        if self.n_valid == 0:
            return f"{head}: no valid image ({self.skipped} skipped)"
        r = self.rate
        return (f"{head}: attacks found the planted example on {self.passed} of {self.n_valid} images "
                f"({100 * r.value:.0f} % [{100 * r.low:.0f}, {100 * r.high:.0f}]); {self.skipped} skipped")


def default_attack(*, norm: str, eps: float, seed: int, config: PGDConfig | None = None, batch_size: int = 100,
                   device: torch.device | str = "cpu", gradient: GradientPath = GradientPath(),
                   bpda_types: SurrogateTypes | None = None) -> Attack:
    """hahrobust's PGD through the runner (every example verified), as an :data:`Attack`: broken = correct clean
    and not robust at ε."""

    def attack(binarized: nn.Module, images: ImageSet) -> np.ndarray:
        outcome = run_attack_images(binarized, images, AttackRequest(
            "pgd", norm, [eps], config if config is not None else PGDConfig(), seed=seed, batch_size=batch_size,
            gradient=gradient, bpda_types=bpda_types), RunOptions(device))
        return outcome.correct & ~outcome.robust[0]

    return attack


def self_test(
    model: nn.Module, data: ImageSet, *, norm: str, eps: float, images: int = 100, seed: int = 0,
    attack: Attack | None = None, inner: int = 100, gap: float = 0.05, probes: int = 16,
    features: nn.Module | str | None = None, require_correct: bool = True, config: PGDConfig | None = None,
    gradient: GradientPath = GradientPath(), bpda_types: SurrogateTypes | None = None, batch_size: int = 100,
    device: torch.device | str = "cpu",
) -> SelfTestResult:
    """Run the binarization test: :func:`binarize`, then ``attack(binarized_model, valid_images)`` (per-image
    booleans, "broken with a verified example"; default :func:`default_attack`, PGD with ``config``, ``gradient``
    and ``bpda_types``), over the valid images only. Same seed → same result, whatever ``batch_size``."""
    b = binarize(model, data, norm=norm, eps=eps, images=images, seed=seed, inner=inner, gap=gap, probes=probes,
                 features=features, require_correct=require_correct, batch_size=batch_size, device=device)
    attack_name = "pgd (hahrobust runner)" if attack is None else getattr(attack, "__name__", "custom")
    if attack is None:
        attack = default_attack(norm=norm, eps=eps, seed=seed, config=config, batch_size=batch_size, device=device,
                                gradient=gradient, bpda_types=bpda_types)
    broken = np.zeros(len(b.index), dtype=bool)
    if b.valid.any():
        found = np.asarray(attack(b.model, b.image_set(f"self-test of {data.source}")), dtype=bool)
        if found.shape != (int(b.valid.sum()),):
            raise HahrobustError(f"the attack returned {found.shape} flags for {int(b.valid.sum())} images")
        broken[b.valid] = found
    table = pd.DataFrame({
        "index": b.index, "label": data.labels[torch.as_tensor(b.index)].numpy(), "valid": b.valid,
        "reason": list(b.reason), "boundary_distance": b.boundary_distance, "random_hits": b.random_hits,
        "passed": broken & b.valid,
    })
    settings: Mapping[str, Any] = {**b.settings, "attack": attack_name, "gradient": gradient.settings()}
    return SelfTestResult(table, dict(settings))


__all__ = [
    "Binarization", "BinarizedModel", "PenultimateFeatures", "SELF_TEST_NORMS", "SelfTestResult", "binarize",
    "default_attack", "feature_extractor", "fit_readout", "self_test",
]
