"""hahrobust train: train a registered model from a preset, with any setting overridden by a flag."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from hahrobust import distributed
from hahrobust.cli._common import DEVICE, TRAIN_DATA, OVERWRITE, console, data_path, handle_errors, load_split, make_progress
from hahrobust.attacks.norms import check_norm, parse_eps
from hahrobust.devices import resolve_device
from hahrobust.errors import HahrobustError
from hahrobust.models import model_names, resolve_config
from hahrobust.training import Runtime, TrainConfig, preset, run_paths, train
from hahrobust.training.hebbian import train_hebbnet
from hahrobust.training.hebbian_config import default_zca, hebbnet_settings, resolve_layers

NAME = "train"

#: Old spellings of train's own options, still accepted but shown nowhere (cli/__init__.py): old → new. "norm" is
#: the attack norm and "sigma" the noise σ elsewhere; "layers" the measured layers of sparsity and snr.
OLD_NAMES = {"norm": "block-norm", "sigma": "dn-sigma", "layers": "rules"}


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise HahrobustError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise HahrobustError(f"{what} is empty")
    return values


def parse_adversarial(text: str | None) -> dict[str, Any]:
    """``linf:2/255`` → the TrainConfig fields of PGD adversarial training (empty when not asked for)."""
    if text is None:
        return {}
    norm, _, eps = text.partition(":")
    if not eps:
        raise HahrobustError(f"--adversarial takes NORM:EPS, e.g. linf:2/255, got {text!r}")
    norm = check_norm(norm.strip())
    values = parse_eps(eps, norm)
    if len(values) != 1:
        raise HahrobustError(f"--adversarial takes one ε, got {eps!r}")
    return {"adversarial_norm": norm, "adversarial_eps": values[0]}


@handle_errors
def command(
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (.safetensors); a .state.safetensors and .log.csv go beside it."),
    model: str = typer.Option("hah-vgg16", help=f"Architecture: {', '.join(model_names())}."),
    preset_name: str = typer.Option("small", "--preset", help="paper | authors | small | medium (see the README for what each sets)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (lr milestones stay at 60 % and 80 % of them)."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size.", show_default="the preset's"),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate."),
    weight_decay: Optional[float] = typer.Option(None, help="Adam weight decay."),
    seed: Optional[int] = typer.Option(None, help="Seed for initialisation, data order and augmentation."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Random crop (pad 4) + horizontal flip."),
    train_subset: Optional[int] = typer.Option(None, help="Train on a class-balanced subset of N images."),
    test_subset: Optional[int] = typer.Option(None, help="Score each epoch on a class-balanced subset of N test images."),
    adversarial: Optional[str] = typer.Option(None, help="PGD adversarial training at NORM:EPS, e.g. linf:2/255 (Madry et al. 2018; random start, steps of 2.5·ε/steps)."),
    adversarial_steps: Optional[int] = typer.Option(None, help="PGD steps per batch in adversarial training.", show_default="3"),
    noise_sigma: Optional[float] = typer.Option(None, "--noise-sigma", help="Gaussian data augmentation: N(0, σ²) noise on every training image (Cohen et al. 2019's base classifiers for certification).", show_default="0: clean"),
    width: Optional[float] = typer.Option(None, help="Channel-width multiplier (0.25: 16…128 channels)."),
    hah_blocks: Optional[int] = typer.Option(None, help="Number of leading conv blocks that are HaH blocks."),
    lam: Optional[float] = typer.Option(None, help="Anti-Hebbian weight λ in the HaH cost (paper 0.1, authors' code 1.0)."),
    alpha: Optional[str] = typer.Option(None, help="HaH cost weights per HaH block, comma-separated."),
    k_ratio: Optional[float] = typer.Option(None, help="Fraction of filters counted as winners in the HaH cost."),
    dn_sigma: Optional[float] = typer.Option(None, "--dn-sigma", help="Divisive normalization σ (HaH blocks)."),
    dn_pool: Optional[int] = typer.Option(None, help="Divisive-norm suppression field: 1 = paper Eq. 2, 3 = authors' 3×3 max-pool."),
    keep: Optional[float] = typer.Option(None, help="Fraction of locations the threshold keeps."),
    threshold: Optional[str] = typer.Option(None, help="fraction | mean | none."),
    block_norm: Optional[str] = typer.Option(None, "--block-norm", help="Normalization in HaH blocks: divisive | batch."),
    hah_loss: Optional[bool] = typer.Option(None, "--hah-loss/--no-hah-loss", help="Add the HaH cost to the loss."),
    rules: Optional[str] = typer.Option(None, "--rules", help="hebb-net: learning rule per layer conv1-4, fc5, classifier: H Hebbian, G gradient, R random (e.g. HHGGGG)."),
    rule: Optional[str] = typer.Option(None, help="hebb-net: sgd (GGGGGG) or hebbian (H at --hebbian-layers: all unless given)."),
    hebbian_layers: Optional[str] = typer.Option(None, help="hebb-net with --rule hebbian: Hebbian layers 1-6, e.g. 1,2."),
    hebbian_epochs: Optional[int] = typer.Option(None, help="hebb-net: Hebbian epochs per Hebbian layer (paper 2)."),
    hebbian_lr: Optional[float] = typer.Option(None, help="hebb-net: Hebbian learning rate (paper 0.1)."),
    val_size: Optional[int] = typer.Option(None, help="hebb-net: training images held out to keep the best epoch (paper 10,000)."),
    zca: Optional[bool] = typer.Option(None, "--zca/--no-zca", help="hebb-net: ZCA-whiten inputs.", show_default="when conv1 is Hebbian"),
    base: Optional[Path] = typer.Option(None, help="hebb-net: trained GGGGGG checkpoint supplying gradient layers below Hebbian ones."),
    data: Optional[str] = TRAIN_DATA,
    download: bool = typer.Option(False, help="Let torchvision download CIFAR-10 into --data."),
    device: str = DEVICE,
    amp: str = typer.Option("off", help="off | bf16: bfloat16 autocast of the non-HaH layers (thresholded HaH blocks and the HaH cost stay fp32)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC memory format (faster convolutions on GPUs)."),
    compile_model: bool = typer.Option(False, "--compile", help="Experimental: torch.compile the training forward pass (see the README)."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="Under torchrun on CUDA: BatchNorm statistics over the global batch."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last finished epoch (any number of processes)."),
    overwrite: bool = OVERWRITE,
) -> None:
    chosen = preset(preset_name)
    model_flags = dict(
        width=width, hah_blocks=hah_blocks, lam=lam, k_ratio=k_ratio, sigma=dn_sigma, dn_pool=dn_pool, keep=keep,
        threshold=threshold, norm=block_norm, hah_loss=hah_loss, alpha=parse_floats(alpha, "--alpha") if alpha else None,
    )
    train_flags = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, augment=augment,
        train_subset=train_subset, test_subset=test_subset, adversarial_steps=adversarial_steps,
        noise_sigma=noise_sigma,
        **parse_adversarial(adversarial),
    )
    hebbian = dict(layers=rules, rule=rule, hebbian_layers=hebbian_layers, zca=zca, base=base)
    hebbian_train = dict(hebbian_epochs=hebbian_epochs, hebbian_lr=hebbian_lr, val_size=val_size)
    if resolve_config(model)[0] == "hebbnet":  # Amato et al. 2019: its own trainer (hahrobust/training/hebbian.py)
        if amp != "off" or channels_last or compile_model or sync_bn:
            raise HahrobustError("--amp, --channels-last, --compile and --sync-bn apply to the VGG family, not hebb-net")
        if adversarial is not None or adversarial_steps is not None or noise_sigma is not None:
            raise HahrobustError("--adversarial, --adversarial-steps and --noise-sigma apply to the VGG family, not hebb-net")
        return _train_hebbnet(
            out, preset_name, model_flags, {**train_flags, **hebbian_train}, **hebbian, data=data,
            download=download, device=device, resume=resume, overwrite=overwrite,
        )
    if stray := _given({**hebbian, **hebbian_train}):
        name = next(iter(stray))
        raise HahrobustError(f"--{'rules' if name == 'layers' else name.replace('_', '-')} applies only to hebb-net")
    model_overrides = {**chosen.model, **_given(model_flags)}
    config = TrainConfig(**{**chosen.train, **_given(train_flags)})
    runtime = Runtime(amp=amp, channels_last=channels_last, compile=compile_model, sync_bn=sync_bn)  # type: ignore[arg-type]
    torch_device = resolve_device(device)
    if sync_bn and (torch_device.type != "cuda" or not distributed.current().distributed):
        console.print("note: --sync-bn is ignored: it applies under torchrun on CUDA (SyncBatchNorm has no CPU kernel)")
    if out.suffix != ".safetensors":
        raise HahrobustError(f"{out}: the checkpoint must end in .safetensors")
    path = data_path(data)
    with make_progress() as progress:
        train_images = load_split(path, "train", download=download, progress=progress)
        test_images = load_split(path, "test", download=download, progress=progress)
        result = train(
            model, train_images, test_images, out, config=config, model_overrides=model_overrides,
            dataset={"source": train_images.source, "train_n": len(train_images), "test_n": len(test_images)},
            device=torch_device, resume=resume, overwrite=overwrite, progress=progress, runtime=runtime,
        )
    metrics = result.metadata["metrics"]
    table = Table(title=f"{model} ({preset_name} preset) → {out}")
    for column in ("epochs", "train acc", "test acc", "test images", "log"):
        table.add_column(column)
    table.add_row(
        str(config.epochs), f"{100 * metrics['train_acc']:.2f}%", f"{100 * metrics['test_acc']:.2f}%",
        str(metrics["test_n"]), str(run_paths(out)[1]),
    )
    console.print(table)


def _train_hebbnet(
    out: Path,
    preset_name: str,
    model_flags: dict[str, Any],
    train_flags: dict[str, Any],
    *,
    layers: str | None,
    rule: str | None,
    hebbian_layers: str | None,
    zca: bool | None,
    base: Path | None,
    data: str | None,
    download: bool,
    device: str,
    resume: bool,
    overwrite: bool,
) -> None:
    """``hahrobust train --model hebb-net …``: parse, train, print a one-row summary."""
    distributed.require_single_process("hebb-net training")
    layer_string = resolve_layers(layers, rule, hebbian_layers)
    overrides, config = hebbnet_settings(preset_name, model_flags, train_flags)
    overrides = {**overrides, "layers": layer_string, "zca": default_zca(layer_string) if zca is None else zca}
    torch_device = resolve_device(device)
    if out.suffix != ".safetensors":
        raise HahrobustError(f"{out}: the checkpoint must end in .safetensors")
    path = data_path(data)
    with make_progress() as progress:
        train_images = load_split(path, "train", download=download, progress=progress)
        test_images = load_split(path, "test", download=download, progress=progress)
        result = train_hebbnet(
            train_images, test_images, out, model_overrides=overrides, config=config, base=base,
            dataset={"source": train_images.source, "train_n": len(train_images), "test_n": len(test_images)},
            device=torch_device, resume=resume, overwrite=overwrite, progress=progress,
        )
    metrics = result.metadata["metrics"]
    table = Table(title=f"hebb-net {layer_string} ({preset_name} preset) → {out}")
    for column in ("layers", "train acc", "val acc", "test acc", "test images", "log"):
        table.add_column(column)
    val = metrics.get("val_acc")
    table.add_row(
        layer_string, f"{100 * metrics['train_acc']:.2f}%", "—" if val is None else f"{100 * val:.2f}%",
        f"{100 * metrics['test_acc']:.2f}%", str(metrics["test_n"]), str(run_paths(out)[1]),
    )
    console.print(table)


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}
