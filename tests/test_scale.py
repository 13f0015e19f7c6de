"""The fast-path options (bf16 autocast, channels_last, torch.compile, data on the device) agree with the
plain fp32 path, and each is safe on the CPU.

Stated tolerances, and why:
- bf16 autocast leaves thresholded HaH blocks in fp32 (bit-identical outputs) and runs the rest in bf16:
  logits within 2 % (relative ℓ2; bf16 keeps 8 significant bits, ≈0.4 % per rounding) of fp32.
- On the trained reference HaH VGG-16, ≥ 99 % of predictions agree and accuracy moves by ≤ 1 point
  (measured: 99.8 %, 42.8 % → 42.8 % on 1,000 test images).
- A training epoch with bf16 (or channels_last, or torch.compile) ends within 5 % (2 %) of the fp32 run's loss. Not closer:
  a one-step gradient agrees to 1e-5 (tested below), but the hard thresholds turn such float differences
  into flipped locations, which a few Adam steps amplify.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hahrobust import load_checkpoint
from hahrobust.cli import app
from hahrobust.data import balanced_subset, batches, load_cifar10
from hahrobust.models import build
from hahrobust.nn import ActivationExtractor, HaHBlock
from hahrobust.training import Runtime, TrainConfig, train

REFERENCE = Path(__file__).parents[1] / "checkpoints" / "hah-vgg16-small.safetensors"
CONFIG = TrainConfig(epochs=1, batch_size=32, lr=3e-3, augment=True, seed=2)
runner = CliRunner()


@pytest.fixture(scope="module")
def splits(tiny_data: Path):
    return load_cifar10(tiny_data, "train"), load_cifar10(tiny_data, "test")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / a.float().norm())


def test_bf16_autocast_keeps_hah_blocks_exact_and_the_rest_close() -> None:
    torch.manual_seed(0)
    model = build("hah-vgg16", width=0.25).eval()
    x = torch.rand(32, 3, 32, 32)
    names = model.block_names()
    with torch.no_grad(), ActivationExtractor(model, [*names, "features.block7.conv"]) as acts:
        logits = model(x)
        fp32 = {k: v.clone() for k, v in acts.outputs.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits_bf16 = model(x)
        bf16 = dict(acts.outputs)
    for name in model.hah_block_names():
        assert torch.equal(fp32[name], bf16[name]), name
    assert bf16["features.block7.conv"].dtype == torch.bfloat16  # autocast really ran the later blocks
    assert _relative(logits, logits_bf16) < 0.02


def test_bf16_on_the_reference_checkpoint_changes_almost_no_prediction(shared_cifar: Path) -> None:
    model, _ = load_checkpoint(REFERENCE)
    test = balanced_subset(load_cifar10(shared_cifar, "test"), 500, seed=0)
    agree = correct_fp32 = correct_bf16 = 0
    with torch.no_grad():
        for x, y, _ in batches(test, 250):
            a = model(x).argmax(1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                b = model(x).argmax(1)
            agree += int((a == b).sum())
            correct_fp32 += int((a == y).sum())
            correct_bf16 += int((b == y).sum())
    assert agree >= 0.99 * len(test)
    assert abs(correct_fp32 - correct_bf16) <= 0.01 * len(test)


@pytest.mark.parametrize(
    ("runtime", "loss_rtol"),
    [(Runtime(amp="bf16"), 0.05), (Runtime(channels_last=True), 0.02), (Runtime(amp="bf16", channels_last=True), 0.05)],
    ids=["bf16", "channels_last", "bf16+channels_last"],
)
def test_training_with_a_runtime_option_matches_fp32(
    splits, tmp_path: Path, runtime: Runtime, loss_rtol: float
) -> None:
    plain = train("hah-vgg11", *splits, tmp_path / "plain.safetensors", config=CONFIG, model_overrides={"width": 0.125})
    fast = train("hah-vgg11", *splits, tmp_path / "fast.safetensors", config=CONFIG, model_overrides={"width": 0.125},
                 runtime=runtime)
    (a,), (b,) = plain.metadata["history"], fast.metadata["history"]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=loss_rtol)
    assert b["hah_objective"] == pytest.approx(a["hah_objective"], rel=loss_rtol)
    assert fast.metadata["runtime"]["amp"] == runtime.amp and b["amp"] == runtime.amp


def _gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, forward=None) -> dict[str, torch.Tensor]:
    """Parameter gradients of one training loss (cross-entropy − HaH objective), through ``forward``."""
    model.train()
    model.record_hah_costs(True)
    (torch.nn.functional.cross_entropy((model if forward is None else forward)(x), y) - model.hah_objective()).backward()
    return {k: p.grad for k, p in model.named_parameters()}


def _twin(model: torch.nn.Module) -> torch.nn.Module:
    twin = build("hah-vgg11", width=0.125)
    twin.load_state_dict(model.state_dict())
    return twin


def test_channels_last_gives_the_same_gradients() -> None:
    """On two threads (the default on this machine and CI's; an xdist worker gets one). Measured against a
    float64 run of the same model: contiguous 2.8e-6 and channels_last 6.4e-6 relative error at two threads, but
    at one thread channels_last's conv-bias gradients are 1.2e-4 off (contiguous 3.1e-6): torch's one-thread
    channels_last bias reduction, not hahrobust's layers, hence the thread count is pinned here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _assert_channels_last_gives_the_same_gradients()
    finally:
        torch.set_num_threads(threads)


def _assert_channels_last_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = build("hah-vgg11", width=0.125)
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    reference = _gradients(model, x, y)
    got = _gradients(_twin(model).to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last), y)
    for key, value in reference.items():
        assert _relative(value, got[key]) < 1e-4, key


def test_data_on_the_device_gives_the_same_batches(splits) -> None:
    train_set, _ = splits
    # On a machine without CUDA the "device" is the CPU, but the code path (indexing a set that already
    # lives on the target device, augmenting it there) is the one CUDA takes.
    moved = train_set.to("cpu")
    for (xa, ya, ia), (xb, yb, ib) in zip(
        batches(train_set, 50, shuffle=True, augment=True, seed=1), batches(moved, 50, shuffle=True, augment=True, seed=1)
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)


@pytest.mark.slow
def test_compiled_training_matches_eager(splits, tmp_path: Path) -> None:
    """torch.compile on the CPU (≈ 1 min of compilation, hence slow). What holds, measured: a HaH block's
    output and both of its gradients (cost and downstream) agree with eager to 1e-6, the whole model's
    logits to 1e-5, and an epoch ends within 2 % of the eager loss. What is *not* claimed: whole-model
    one-step gradients differ from eager by up to 0.3 % in the HaH blocks (channels_last: 3e-6); the
    cause is not pinned down, so --compile is documented as experimental."""
    torch.manual_seed(0)
    block = HaHBlock(3, 8)
    block.record_cost = True
    x = torch.randn(16, 3, 32, 32)
    compiled_block = torch.compile(block)
    for loss in (lambda out: block.cost, lambda out: out.square().mean()):
        results = []
        for forward in (block, compiled_block):
            block.zero_grad()
            out = forward(x)
            loss(out).backward()
            results.append((out.detach(), block.conv.weight.grad.clone()))
        (out_eager, grad_eager), (out_compiled, grad_compiled) = results
        assert _relative(out_eager, out_compiled) < 1e-6 and _relative(grad_eager, grad_compiled) < 1e-5
    model = build("hah-vgg11", width=0.125).eval()
    images = torch.rand(32, 3, 32, 32)
    with torch.no_grad():
        assert _relative(model(images), torch.compile(model)(images)) < 1e-5
    plain = train("hah-vgg11", *splits, tmp_path / "plain.safetensors", config=CONFIG, model_overrides={"width": 0.125})
    compiled = train("hah-vgg11", *splits, tmp_path / "compiled.safetensors", config=CONFIG,
                     model_overrides={"width": 0.125}, runtime=Runtime(compile=True))
    assert compiled.metadata["history"][0]["train_loss"] == pytest.approx(plain.metadata["history"][0]["train_loss"], rel=0.02)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--amp", "fp16"], "unknown --amp 'fp16'"),
        (["--model", "hebb-net", "--amp", "bf16"], "apply to the VGG family, not hebb-net"),
    ],
)
def test_bad_runtime_options_are_one_line_errors(tiny_data: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "m.safetensors"
    result = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(out), *extra])
    assert result.exit_code == 2 and message in result.output and not out.exists()


def test_sync_bn_on_the_cpu_is_ignored_with_a_note(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = runner.invoke(app, [
        "train", "--preset", "paper", "--model", "vgg11", "--width", "0.125", "--epochs", "1", "--device", "cpu",
        "--sync-bn", "--channels-last", "--amp", "bf16", "--data", str(tiny_data), "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "note: --sync-bn is ignored" in result.output and out.exists()
    runtime = load_checkpoint(out)[1]["runtime"]
    assert runtime == {"amp": "bf16", "channels_last": True, "compile": False, "sync_bn": True, "processes": 1}
