"""`hahrobust train` and `hahrobust info` driven as a user would: CliRunner, a real kill -9, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import fill_disk_after
from hahrobust import checkpoint as checkpoint_module
from hahrobust import load_checkpoint
from hahrobust.cli import app
from hahrobust.training import run_paths
from hahrobust.training import state as state_module

runner = CliRunner()
TINY_TRAIN = ["--model", "hah-vgg11", "--width", "0.125", "--epochs", "2", "--batch-size", "50", "--device", "cpu",
              "--train-subset", "200"]


def test_train_then_info(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "hah.safetensors"
    result = runner.invoke(app, ["train", *TINY_TRAIN, "--data", str(tiny_data), "--out", str(out), "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "test acc" in result.output
    assert out.is_file() and run_paths(out)[1].is_file()

    shown = runner.invoke(app, ["info", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "hah-vgg11" in shown.output and "sha256" in shown.output
    as_json = runner.invoke(app, ["info", str(out), "--json"])
    metadata = json.loads(as_json.output)
    assert metadata["model"]["config"]["width"] == 0.125 and metadata["seed"] == 4
    assert metadata["train"]["epochs"] == 2 and metadata["epochs"] == 2


def test_preset_values_reach_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "authors.safetensors"
    args = ["train", "--preset", "authors", "--model", "hah-vgg11", "--width", "0.125", "--epochs", "1",
            "--data", str(tiny_data), "--out", str(out), "--lam", "0.5", "--train-subset", "200"]
    assert runner.invoke(app, args).exit_code == 0
    _, metadata = load_checkpoint(out)
    config = metadata["model"]["config"]
    assert config["dn_pool"] == 3 and config["lam"] == 0.5  # preset value, then the flag overrides it
    assert metadata["train"]["augment"] is True and metadata["seed"] == 2022


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet50"], "unknown model"),
        (["--preset", "huge"], "unknown preset"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--epochs", "-2"], "epochs must be a positive integer"),
        (["--device", "tpu"], "device"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "CUDA"),
        (["--data", "/nonexistent/cifar"], "no such file"),
        (["--alpha", "1,x"], "--alpha"),
        (["--threshold", "median"], "threshold"),
    ],
)
def test_train_bad_input(args: list[str], message: str, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad.safetensors"
    base = ["train", "--width", "0.125", "--epochs", "1", "--train-subset", "200", "--data", str(tiny_data), "--out", str(out)]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_wrong_layout_is_named(tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code != 0 and "expected train/ and test/" in result.output
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x00" * 100])
def test_info_rejects_non_checkpoints(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and result.output.count("\n") == 1


def test_info_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2 and "not found" in result.output


def test_kill_9_then_resume_equals_uninterrupted(tiny_data: Path, tmp_path: Path) -> None:
    """A real SIGKILL mid-run: the state file stays valid, and --resume ends with the same weights."""
    args = [sys.executable, "-m", "hahrobust", "train", "--model", "hah-vgg11", "--width", "0.125", "--epochs", "4",
            "--batch-size", "20", "--device", "cpu", "--data", str(tiny_data), "--seed", "9", "--train-subset", "200"]
    env = {**os.environ, "HAHROBUST_CACHE": str(tmp_path / "cache")}
    reference = tmp_path / "reference.safetensors"
    subprocess.run([*args, "--out", str(reference)], check=True, capture_output=True, env=env, timeout=300)

    out = tmp_path / "killed.safetensors"
    state = run_paths(out)[0]
    proc = subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not out.exists(), "the run should have been killed after its first epoch"

    resumed = subprocess.run([*args, "--out", str(out), "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = load_checkpoint(reference)[0].state_dict(), load_checkpoint(out)[0].state_dict()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


# ------------------------------------------------------------------------------------------------ full disk

def kept(state: Path, epochs: int) -> str:
    return f"the state after {epochs} finished epoch(s) is kept in {state}: free space, then resume from it"


def test_full_disk_during_training_keeps_the_last_epoch_for_resume(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk stops `train` with one line naming the file and the cause, never a partial file, and with
    the last finished epoch's state kept: --resume then ends where an undisturbed run ends."""
    reference, out = tmp_path / "reference.safetensors", tmp_path / "run" / "hah.safetensors"
    out.parent.mkdir()
    state, log = run_paths(out)
    args = ["train", *TINY_TRAIN, "--seed", "3", "--data", str(tiny_data), "--out"]
    assert runner.invoke(app, [*args, str(reference)]).exit_code == 0

    with monkeypatch.context() as patch:  # the disk is full from the start: nothing to keep
        fill_disk_after(patch, state_module, 0)
        result = runner.invoke(app, [*args, str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == f"error: {state}: cannot write the training state (No space left on device); no finished epoch is saved\n"
    assert list(out.parent.iterdir()) == []

    with monkeypatch.context() as patch:  # full during epoch 2's save
        fill_disk_after(patch, state_module, 1)
        result = runner.invoke(app, [*args, str(out)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {state}: cannot write the training state (No space left on device); {kept(state, 1)}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == [log.name, state.name]  # no temporary file left
    assert len(pd.read_csv(log)) == 1

    with monkeypatch.context() as patch:  # resumed, then full when the checkpoint is written
        fill_disk_after(patch, checkpoint_module, 0)
        result = runner.invoke(app, [*args, str(out), "--resume"])
    assert result.exit_code == 2
    assert result.stderr == f"error: {out}: cannot write the checkpoint (No space left on device); {kept(state, 2)}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == [log.name, state.name]

    result = runner.invoke(app, [*args, str(out), "--resume"])  # space again
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [log.name, out.name]
    expected, got = load_checkpoint(reference)[0].state_dict(), load_checkpoint(out)[0].state_dict()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_disk("2500k")``: a tmpfs of that size mounted in tmp_path, mounted again with a new size on the
    next call; skipped where mounting is not permitted (not root, or a container without the capability)."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = False

    def mount(size: str) -> Path:
        nonlocal mounted
        options = f"remount,size={size}" if mounted else f"size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted = True
        return where

    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    try:
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=True)


def test_train_on_a_real_full_file_system(small_disk: Callable[[str], Path], tiny_data: Path) -> None:
    """The same on a real tmpfs: room for one training state (1.8 MB) but not for its replacement beside it."""
    out = small_disk("2500k") / "hah.safetensors"
    state, log = run_paths(out)
    args = ["train", *TINY_TRAIN, "--data", str(tiny_data), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == f"error: {state}: cannot write the training state (No space left on device); {kept(state, 1)}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == [log.name, state.name]
    small_disk("16m")
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [log.name, out.name]
