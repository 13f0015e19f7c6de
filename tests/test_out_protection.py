"""No command silently replaces an earlier run's results: when --out already holds a command's result files it
refuses with one line (exit 2) unless --overwrite (or --resume, where the command resumes) says otherwise.
Parametrised over every registered command whose --out is a results folder, so a new command is covered."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hahrobust.cli import app, commands

runner = CliRunner()

COMMANDS = commands()
#: train's --out is the checkpoint file it writes (it refuses to replace one without --overwrite: test_cli_core).
RESULT_COMMANDS = sorted(
    name for name, command in COMMANDS.items() if name != "train" and any(p.name == "out" for p in command.params)
)


def test_every_evaluation_command_is_covered() -> None:
    assert {"sparsity", "snr", "noise-sweep", "corruption-sweep", "attack", "audit", "ablate", "hebbian-sweep"} <= set(RESULT_COMMANDS)


def arguments(name: str, checkpoint: Path, data: Path, out: Path) -> list[str]:
    command = COMMANDS[name]
    models = [str(checkpoint)] if any(p.name == "checkpoints" for p in command.params) else []
    models *= 2 if name in ("report", "leaderboard") else 1  # MODEL and BASELINE
    ranked = ["-l", "a", "-l", "b", "--baseline", "b"] if name == "leaderboard" else []
    return [name, *models, *ranked, "--data", str(data), "--out", str(out)]


@pytest.mark.parametrize("name", RESULT_COMMANDS)
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_existing_results_are_kept_unless_overwrite(name: str, suffix: str, make_checkpoint, tiny_data: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / f"{name}{suffix}"
    earlier.write_text("an earlier run's numbers")
    args = arguments(name, make_checkpoint("vgg11"), tiny_data, out)

    refused = runner.invoke(app, [*args, "--device", "bogus"])
    assert refused.exit_code == 2
    (line,) = refused.output.strip().splitlines()
    assert f"{earlier} holds an earlier run's results; pass --" in line
    assert earlier.read_text() == "an earlier run's numbers" and sorted(out.iterdir()) == [earlier]

    # --overwrite and --resume, where the command has them, pass this check: the run goes on to the next one
    # (here the bogus device). ablate has only --resume: it always reuses its finished variants.
    options = {p.name for p in COMMANDS[name].params}
    assert options & {"overwrite", "resume"}
    for option, offer in (("overwrite", "--overwrite to replace them"), ("resume", "--resume to continue")):
        assert (offer in line) == (option in options)
        if option in options:
            passed = runner.invoke(app, [*args, "--device", "bogus", f"--{option}"])
            assert passed.exit_code == 2 and "earlier run" not in passed.output and "bogus" in passed.output


@pytest.mark.parametrize(("args", "name"), [(["--table", "paper"], "attack-table1"), ([], "audit-diagnostics")])
def test_every_result_a_command_writes_is_protected(args: list[str], name: str, make_checkpoint, tiny_data: Path,
                                                    tmp_path: Path) -> None:
    """attack --table paper writes attack-table1.*, audit also audit-diagnostics.*."""
    (tmp_path / f"{name}.md").write_text("kept")
    command = "attack" if name.startswith("attack") else "audit"
    result = runner.invoke(app, [*arguments(command, make_checkpoint("vgg11"), tiny_data, tmp_path), *args])
    assert result.exit_code == 2 and f"{name}.md holds an earlier run's results" in result.output


def test_overwrite_replaces_the_results(make_checkpoint, tiny_data: Path, tmp_path: Path) -> None:
    args = [*arguments("noise-sweep", make_checkpoint("vgg11"), tiny_data, tmp_path), "--images", "10",
            "--sigmas", "0.1", "--repeats", "1", "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    first = (tmp_path / "noise-sweep.csv").read_text()
    assert runner.invoke(app, args).exit_code == 2
    again = runner.invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "noise-sweep.csv").read_text() == first  # same seed, same numbers, the file rewritten
