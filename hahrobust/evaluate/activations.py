"""What the activations show: sparsity of the leading conv blocks (the paper's Fig. 2) and the SNR at each block's
input under noise (Eq. 6, Fig. 3): ``hahrobust sparsity`` and ``hahrobust snr`` as functions."""

from __future__ import annotations

import dataclasses

import torch
from rich.progress import Progress

from hahrobust.data import ImageSet
from hahrobust.errors import HahrobustError
from hahrobust.evaluate._common import Models, as_device, common_settings, loaded, origins, per_model
from hahrobust.evaluate.opening import LoadedModel, layers_for
from hahrobust.metrics.noise import check_noise, check_repeats, check_sigmas
from hahrobust.metrics.snr import snr as measure_snr
from hahrobust.metrics.sparsity import default_block_count, sparsity as measure_sparsity
from hahrobust.results import Figure, Layout, Result

SPARSITY_NAME = "sparsity"

SPARSITY_LAYOUT = Layout(
    title="Activation sparsity per block (Fig. 2; Hoyer: lower = sparser)",
    index=("block",),
    columns=("model",),
    values=("hoyer", "nonzero", "zero_locations"),
    formats={"hoyer": "{:.3f}", "nonzero": "{:.1%}", "zero_locations": "{:.1%}"},
    labels={"hoyer": "Hoyer", "nonzero": "non-zero", "zero_locations": "all-zero locations"},
    notes=(
        "Hoyer = (‖a‖₁/‖a‖₂ − 1)/(√N − 1) of the activations a across the N channels at each spatial location "
        "(0: one channel active, 1: all equal), averaged over locations and images.",
        "Measured tensor: the block output that feeds the next block (HaH blocks: after normalization and "
        "threshold); blocks that end in BatchNorm are measured at the BatchNorm's input (the rectified "
        "activations), because eval-mode BatchNorm is a per-channel affine map that turns zeros into "
        "per-channel constants and carries no information of its own. The CSV's tensor column says which, "
        "per block.",
        "Locations where all channels are zero (Hoyer undefined) are left out of the Hoyer average; "
        "their share is the all-zero locations column. Non-zero is the fraction of non-zero activations.",
    ),
    figure=Figure(
        kind="bar", x="block", y=("hoyer", "nonzero"), percent=("nonzero",),
        ylabels={"hoyer": "Hoyer measure (lower = sparser)", "nonzero": "non-zero activations"},
    ),
)


def sparsity(
    models: Models,
    data: ImageSet,
    *,
    blocks: int | None = None,
    layers: str | None = None,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Result:
    """Hoyer sparsity and non-zero fraction of each model's leading ``blocks`` conv blocks (default: the most HaH
    blocks among the hahrobust models), or of the layers ``layers`` picks in a model that is not a hahrobust one."""
    device = as_device(device)
    opened = loaded(models, device)
    counts, block_count, selected = block_counts(opened, blocks, layers)
    rows = per_model(opened, lambda m: measure_sparsity(
        m.model, data, counts[m.label], layers=selected[m.label], batch_size=batch_size, device=device,
        progress=progress, description=f"sparsity {m.label}",
    ))
    settings = {**common_settings(data, seed=seed, batch_size=batch_size, device=device),
                **({"blocks": block_count} if block_count is not None else {})}
    if any(selected.values()):
        settings["layers"] = layers
    layout = with_layers_note(SPARSITY_LAYOUT, selected, layers, "the output (as it is, no BatchNorm-input substitution)")
    return Result(SPARSITY_NAME, rows, settings, origins(opened), layout)


def block_counts(
    models: list[LoadedModel], blocks: int | None, layers: str | None
) -> tuple[dict[str, int], int | None, dict[str, list[str] | None]]:
    """(blocks to measure per model label, the hahrobust models' shared count, the layers picked per label); a
    count a model does not have is a one-line error. Checked before any image is read."""
    selected = layers_for(models, layers)  # None: a hahrobust model's blocks
    native = [m.model for m in models if not m.is_foreign]
    block_count = blocks if blocks is not None or not native else default_block_count(native)
    counts: dict[str, int] = {}
    for m in models:
        names = selected[m.label]
        available = len(m.model.block_names()) if names is None else len(names)
        count = block_count if names is None else (blocks if blocks is not None else available)
        if count is None or not 1 <= count <= available:
            what = "conv blocks" if names is None else f"layers matching --layers {layers}"
            where = f" ({m.path})" if m.path is not None else ""
            raise HahrobustError(f"--blocks {count}: {m.label}{where} has {available} {what}")
        counts[m.label] = count
    return counts, block_count, selected


def with_layers_note(layout: Layout, layers: dict[str, list[str] | None], selector: str | None, what: str) -> Layout:
    """``layout`` plus a note naming the models measured at ``--layers`` layers (``what``: which tensor of
    each layer), or ``layout`` itself when every model was measured per block."""
    picked = [label for label, names in layers.items() if names is not None]
    if not picked:
        return layout
    note = (f"{', '.join(picked)}: {what} of each layer --layers {selector} picks, in forward order; "
            "block_name in the CSV names each.")
    return dataclasses.replace(layout, notes=(*layout.notes, note))


SNR_NAME = "snr"
#: A model spec's layers measured without --layers: the input of every convolution, as a conv block's input is.
FOREIGN_LAYERS = "Conv2d"

SNR_LAYOUT = Layout(
    title="SNR at the input of each conv block (Eq. 6, Fig. 3b)",
    index=("block",),
    columns=("model",),
    values=("snr_db",),
    formats={"snr_db": "{:.2f} dB"},
    errors={"snr_db": "snr_db_std"},
    labels={"snr_db": "SNR"},
    notes=(
        "SNR_n = 10·log10(E_x,w[‖f_n(x)‖² / ‖f_n(x+w) − f_n(x)‖²]) dB, f_n = the input of conv block n "
        "(block 1: the image after the model's input normalization); the mean of the linear ratio over images "
        "and noise draws is taken before converting to dB.",
        "w: noise of standard deviation σ added to the [0, 1] image, clipped to [0, 1]; drawn per image and "
        "repeat from a generator seeded by (seed, repeat, image index). ± is the standard deviation over repeats.",
        "∞: the noise never changed that block's input (e.g. σ = 0).",
    ),
    figure=Figure(kind="bar", x="block", y=("snr_db",), ylabels={"snr_db": "SNR (dB)"}),
)


def snr(
    models: Models,
    data: ImageSet,
    *,
    sigma: float = 0.1,
    noise: str = "gaussian",
    repeats: int = 3,
    layers: str | None = None,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Result:
    """SNR (dB) at the input of every conv block (a model that is not a hahrobust one: of the layers ``layers``
    picks, its convolutions by default) under noise of standard deviation ``sigma``."""
    (sigma,) = check_sigmas([sigma])
    kind, repeats = check_noise(noise), check_repeats(repeats)
    device = as_device(device)
    opened = loaded(models, device)
    # Foreign models have no blocks: their convolutions' inputs are what Eq. 6 measures at a conv block's input.
    names = layers_for(opened, layers, FOREIGN_LAYERS)
    rows = per_model(opened, lambda m: measure_snr(
        m.model, data, sigma, layers=names[m.label], noise=kind, repeats=repeats, seed=seed,
        batch_size=batch_size, device=device, progress=progress, description=f"SNR {m.label}",
    ))
    selector = layers or FOREIGN_LAYERS
    settings = {
        **common_settings(data, seed=seed, batch_size=batch_size, device=device), "sigma": sigma, "noise": kind,
        "repeats": repeats, **({"layers": selector} if any(names.values()) else {}),
    }
    return Result(SNR_NAME, rows, settings, origins(opened), with_layers_note(SNR_LAYOUT, names, selector, "SNR at the input"))
