"""torchrun with the gloo backend and 2 CPU processes against one process (hahrobust.distributed).

- training: DDP on slices of every global batch reaches the single-process weights within float tolerance
  (the HaH model here has HaH blocks only, so no BatchNorm statistics differ between ranks); a run
  interrupted in one process resumes under torchrun with 2;
- evaluation: noise sweep, SNR, sparsity and PGD computed on 2 ranks equal the single-process tables
  exactly, through the library and through the CLI.

Both sides run single-threaded (torchrun's default OMP_NUM_THREADS=1), so that every batch is computed
with the same kernels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import single_thread

from hahrobust.checkpoint import read_metadata
from hahrobust.cli import app
from hahrobust.training import loop as loop_module

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

WORKER = Path(__file__).with_name("distributed_worker.py")
# All-HaH VGG-11 (no BatchNorm), augmentation on, 200 images in batches of 33: ranks get 17 + 16 images
# (unequal, so the loss weighting matters) and the last batch (2) is split 1 + 1.
TRAIN = [
    "train", "--preset", "paper", "--model", "hah-vgg11", "--hah-blocks", "8", "--width", "0.125", "--epochs", "2", "--batch-size", "33",
    "--augment", "--seed", "5", "--device", "cpu",
]
runner = CliRunner()


@pytest.fixture
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


def torchrun(
    args: list[str], cwd: Path, nproc: int = 2, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node N ARGS`` (a free port each time, ``env`` added to the
    environment); fails the test on error unless ``ok=False``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1]), **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def hahrobust(*args: str) -> list[str]:
    return ["-m", "hahrobust", *args]


@pytest.fixture(scope="module")
def single_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: ``hahrobust train`` in one process, one thread."""
    out = tmp_path_factory.mktemp("single") / "model.safetensors"
    with single_thread():
        result = runner.invoke(app, [*TRAIN, "--data", str(tiny_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def assert_weights_close(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for key in wa:
        # Float tolerance: the two ranks' gradients are averaged, so sums run in another order; 14 Adam steps
        # keep such differences at the 1e-6 level (a wrong shard or loss weighting moves weights by 1e-3).
        assert torch.allclose(wa[key], wb[key], rtol=1e-4, atol=2e-5), f"{key}: {(wa[key] - wb[key]).abs().max()}"


def test_ddp_training_matches_one_process(single_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp.safetensors"
    torchrun(hahrobust(*TRAIN, "--data", str(tiny_data), "--out", str(out)), cwd=tmp_path)
    assert_weights_close(single_run, out)
    meta, reference = read_metadata(out), read_metadata(single_run)
    assert meta["runtime"]["processes"] == 2 and reference["runtime"]["processes"] == 1
    for mine, theirs in zip(meta["history"], reference["history"]):
        assert mine["train_acc"] == pytest.approx(theirs["train_acc"], abs=0.02)
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-3)
        assert mine["test_acc"] == theirs["test_acc"]  # the evaluation itself is exact
    assert not list(tmp_path.glob("*.state.safetensors"))  # rank 0 removed the state when done


def test_bad_output_stops_every_rank_with_one_line(single_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Rank 0 judges the output files and every rank stops with the same one-line error (none waits forever)."""
    before = single_run.read_bytes()
    done = torchrun(hahrobust(*TRAIN, "--data", str(tiny_data), "--out", str(single_run)), cwd=tmp_path, ok=False)
    assert done.returncode != 0
    assert done.stderr.count(f"error: {single_run} already exists; pass --overwrite to replace it") == 2
    # torchrun's launcher prints its own traceback for a failed child; none comes from hahrobust's code.
    assert not re.search(r'File ".*hahrobust', done.stderr)
    assert single_run.read_bytes() == before


def test_resume_with_another_number_of_processes(
    single_run: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """Epoch 1 in one process (interrupted in epoch 2), the rest under torchrun with 2: the same weights."""
    out = tmp_path / "model.safetensors"
    real_batches = loop_module.batches

    def interrupting_batches(*args, **kwargs):  # type: ignore[no-untyped-def]
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if kwargs.get("epoch") == 1 and i == 3:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(loop_module, "batches", interrupting_batches)
    result = runner.invoke(app, [*TRAIN, "--data", str(tiny_data), "--out", str(out)])
    assert result.exit_code == 130 and (tmp_path / "model.state.safetensors").exists() and not out.exists()
    torchrun(hahrobust(*TRAIN, "--data", str(tiny_data), "--out", str(out), "--resume"), cwd=tmp_path)
    assert_weights_close(single_run, out)
    assert [row["processes"] for row in read_metadata(out)["history"]] == [1, 2]


def test_metrics_on_two_ranks_equal_one_process_exactly(
    single_run: Path, tiny_data: Path, tmp_path: Path, one_thread: None
) -> None:
    sys.path.insert(0, str(WORKER.parent))
    try:
        import distributed_worker
    finally:
        sys.path.remove(str(WORKER.parent))
    expected = distributed_worker.tables(str(single_run), str(tiny_data))
    out = tmp_path / "tables.json"
    torchrun([str(WORKER), str(single_run), str(tiny_data), str(out)], cwd=tmp_path)
    got = json.loads(out.read_text())
    assert got["world_size"] == 2
    assert got["tables"].keys() == expected.keys()
    for name in expected:
        pd.testing.assert_frame_equal(pd.DataFrame(got["tables"][name]), pd.DataFrame(expected[name]), check_exact=True)
    pgd = pd.DataFrame(expected["pgd"])
    assert (pgd["clean_acc"] > pgd["robust_acc"]).all()  # the attack had work to do on both sides


@pytest.mark.parametrize(
    "command",
    [
        ["noise-sweep", "--sigmas", "0,0.1", "--repeats", "2", "--batch-size", "30"],
        ["attack", "--attack", "pgd", "--norm", "linf,l2", "--steps", "5", "--restarts", "1", "--batch-size", "30"],
    ],
    ids=["noise-sweep", "attack"],
)
def test_cli_evaluation_under_torchrun_writes_the_single_process_table(
    command: list[str], single_run: Path, tiny_data: Path, tmp_path: Path, one_thread: None
) -> None:
    args = [*command, str(single_run), "--data", str(tiny_data), "--device", "cpu", "--seed", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    done = torchrun(hahrobust(*args, "--out", str(tmp_path / "two")), cwd=tmp_path)
    name = command[0]
    one, two = pd.read_csv(tmp_path / "one" / f"{name}.csv"), pd.read_csv(tmp_path / "two" / f"{name}.csv")
    pd.testing.assert_frame_equal(one.drop(columns="seconds", errors="ignore"), two.drop(columns="seconds", errors="ignore"),
                                  check_exact=True)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert done.stdout.count("wrote ") == 1  # rank 0 alone reports (and writes)


def test_corruption_sweep_generated_under_torchrun_equals_one_process(
    single_run: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """Each side generates its own corrupted sets (separate caches): 2 ranks corrupt alternate chunks of images
    and gather them, evaluate alternate batches, and rank 0 writes the same CSV as one process."""
    args = ["corruption-sweep", str(single_run), "--data", str(tiny_data), "--device", "cpu", "--seed", "1",
            "--corruptions", "gaussian_noise,glass_blur,fog", "--severities", "2,5", "--batch-size", "30"]
    monkeypatch.setenv("HAHROBUST_CACHE", str(tmp_path / "cache-one"))
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    torchrun(hahrobust(*args, "--out", str(tmp_path / "two")), cwd=tmp_path, env={"HAHROBUST_CACHE": str(tmp_path / "cache-two")})
    one, two = (pd.read_csv(tmp_path / run / "corruption-sweep.csv") for run in ("one", "two"))
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert len(list((tmp_path / "cache-two").glob("cifar10c-*.safetensors"))) == 3 * 2  # generated there, not copied
