"""torchrun with the gloo backend and 2 CPU processes against one process (hahrobust.distributed).

- training: DDP on slices of every global batch reaches the single-process weights within float tolerance
  (the HaH model here has HaH blocks only, so no BatchNorm statistics differ between ranks); a run
  interrupted in one process resumes under torchrun with 2;
- evaluation: noise sweep, SNR, sparsity and PGD computed on 2 ranks equal the single-process tables
  exactly, through the library and through the CLI (each evaluation command's README torchrun example,
  with --images);
- torchrun's own argument parser lets every option of every command through to hahrobust.

Both sides run single-threaded (torchrun's default OMP_NUM_THREADS=1), so that every batch is computed
with the same kernels.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.distributed.run import get_args_parser
from typer.testing import CliRunner

from conftest import single_thread

import hahrobust
from hahrobust.checkpoint import read_metadata
from hahrobust.cli import COMMANDS, app, commands
from hahrobust.cli._eval import takes_subset_option
from hahrobust.training import loop as loop_module

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

WORKER = Path(__file__).with_name("distributed_worker.py")
PACKAGE = Path(hahrobust.__file__).resolve().parent  # hahrobust's own code, wherever the checkout lives
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
    # torchrun's launcher prints its own traceback for a failed child; no frame of it is in hahrobust's code
    # (judged by the package's own path: the checkout or the environment may well be in a folder "hahrobust").
    frames = [Path(name).resolve() for name in re.findall(r'File "([^"]+)"', done.stderr)]
    assert frames and not [frame for frame in frames if frame.is_relative_to(PACKAGE)]
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


def torchrun_parser_error(arguments: list[str]) -> str | None:
    """What torchrun's own argument parser says about ``torchrun --standalone --nproc-per-node 2 -m hahrobust
    ARGUMENTS`` (None: it hands ARGUMENTS to hahrobust unchanged)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = get_args_parser().parse_args(["--standalone", "--nproc-per-node", "2", "-m", "hahrobust", *arguments])
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None if parsed.training_script_args == arguments else f"hahrobust gets {parsed.training_script_args}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_gets_through_torchruns_parser(command: str) -> None:
    """torchrun's parser (argparse, abbreviations allowed) looks at every argument, also those after
    ``-m hahrobust``, and stops at one that could abbreviate two of its options: ``--n`` (the old name of
    --images) could be --nnodes, --nproc-per-node, … No option of any hahrobust command may do that."""
    assert "ambiguous option: --n could match --nnodes" in torchrun_parser_error([command, "--n", "5"])
    for param in commands()[command].params:
        for name in [*param.opts, *param.secondary_opts] if param.param_type_name == "option" else []:
            spellings = [[name]] if param.is_flag else [[name, "1"], *([[f"{name}=1"]] if name.startswith("--") else [])]
            for spelling in spellings:
                assert torchrun_parser_error([command, "CKPT", *spelling]) is None


README = Path(__file__).resolve().parents[1] / "docs" / "guides" / "torchrun.md"  # the torchrun guide
#: Commands that take --images but refuse torchrun (the README says to train each variant under torchrun instead).
SINGLE_PROCESS = {"ablate", "calibrate"}  # refused under torchrun in one line (its cases run one after another)
EVALUATION_COMMANDS = sorted(
    name for name, c in commands().items() if takes_subset_option(c.callback) and name not in SINGLE_PROCESS
)


def readme_torchrun_examples() -> dict[str, list[str]]:
    """The README's one-line ``torchrun … -m hahrobust COMMAND … --images N`` examples, by command."""
    examples = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("torchrun ") and " --images " in line:
            words = shlex.split(line)
            examples[words[words.index("hahrobust") + 1]] = words
    return examples


def test_every_evaluation_command_has_a_readme_torchrun_example_with_images() -> None:
    assert sorted(readme_torchrun_examples()) == EVALUATION_COMMANDS


@pytest.mark.parametrize("command", EVALUATION_COMMANDS)
def test_readme_torchrun_example_writes_the_single_process_table(
    command: str, single_run: Path, make_checkpoint, tiny_data: Path, tmp_path: Path, one_thread: None
) -> None:
    """The README's torchrun line, as written but for the files, 2 processes, a subset of the tiny test set in
    several batches (so both ranks work), for attack a 5-step PGD and for certify 100 noise draws, gives the table
    one process gives."""
    words = readme_torchrun_examples()[command]
    launcher, rest = words[: words.index("-m")], words[words.index("-m") :]
    assert launcher == ["torchrun", "--standalone", "--nproc-per-node", "8"]  # what torchrun() runs, with 2
    files = {"hah.safetensors": str(single_run), "base.safetensors": str(make_checkpoint("vgg11", seed=1)),
             "$D": str(tiny_data)}
    rest = [files.get(word, word) for word in rest]
    rest[rest.index("--images") + 1] = "20"
    if "--samples" in rest:  # certify: 100 noise draws per image still certify some and give the same table twice
        rest[rest.index("--samples") + 1] = "100"
    speed = ["--batch-size", "6", "--device", "cpu", *(["--steps", "5", "--restarts", "1"] if command in ("attack", "audit") else [])]
    if command == "audit":  # the per-image-seeded members (AutoAttack's draws cover a whole batch); Square's
        # batch independence is tested in test_attack_cli, and 1,000 one-image queries per survivor are slow here
        speed += ["--skip", "AutoAttack,APGD·BPDA,Square"]
    args = [*rest[2:], *speed]  # without "-m hahrobust"
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    done = torchrun([*rest[:2], *args, "--out", str(tmp_path / "two")], cwd=tmp_path)
    one, two = pd.read_csv(tmp_path / "one" / f"{command}.csv"), pd.read_csv(tmp_path / "two" / f"{command}.csv")
    pd.testing.assert_frame_equal(one.drop(columns="seconds", errors="ignore"), two.drop(columns="seconds", errors="ignore"),
                                  check_exact=True)
    assert json.loads((tmp_path / "two" / f"{command}.json").read_text())["settings"]["n"] == 20
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    # rank 0 alone reports (and writes); audit and certify write two sets of files (certify: the table, then the curve)
    assert done.stdout.count("wrote ") == (2 if command in ("audit", "certify") else 1)


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
