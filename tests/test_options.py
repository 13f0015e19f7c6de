"""One meaning per option name across every command: old spellings still parse as the new names (hidden from
--help), an option name shared by commands has one help text unless a reviewed reason below says why the texts
differ, every default is shown as [default: …], and the commands are grouped in --help."""

from __future__ import annotations

import re
from collections import defaultdict

from typing import Any

import pytest
from typer.testing import CliRunner

from hahrobust.cli import COMMANDS as ENTRIES, app, commands, module

COMMANDS: dict[str, Any] = commands()

#: Option names whose help differs by command, reviewed: each means the same thing everywhere it appears, and the
#: texts differ only in what that command adds (its own default, its scope, what it writes).
SAME_MEANING_OTHER_WORDS = {
    "--aa-version": "the AutoAttack version; attack lists what each version runs",
    "--adaptive": "the audit's worst case beside each adversarial column of the command's table",
    "--attack-images": "the class-balanced test images the attack steps run on; report and leaderboard name their steps",
    "--attack": "the attack to run; ablate offers the two its columns use, attack every registered one",
    "--budget": "a named budget of images, steps and restarts (hahrobust.report.budget); leaderboard adds its certificates' N",
    "--batch-size": "images processed together: the SGD batch when training, the forward/attack batch when evaluating",
    "--corruptions": "CIFAR-10-C corruption names and groups; report and leaderboard generate them from their --images subset and add none",
    "--data": "the CIFAR-10 source; training commands read both splits, evaluation commands the test split",
    "--epochs": "training epochs; each command says its learning-rate schedule",
    "--eps": "comma-separated ε of the attack norm; attack takes four norms, audit two",
    "--hebbian-epochs": "Hebbian epochs per Hebbian layer; train's text scopes it to hebb-net",
    "--hebbian-lr": "the Hebbian learning rate; train's text scopes it to hebb-net",
    "--images": "a class-balanced subset of N test images; report applies it to its clean, sparsity, SNR and noise steps",
    "--jobs": "steps run side by side in worker processes on a CPU; report and leaderboard each name their steps",
    "--lr": "the learning rate of the command's optimizer (Adam for train, SGD for hebb-net sweeps)",
    "--norm": "the attack norm (train's normalization is --block-norm); audit supports linf and l2 only",
    "--out": "where the command writes: train a checkpoint file, the others a results folder (each says what goes in)",
    "--preset": "a training recipe by name; each command lists the presets it offers",
    "--repeats": "noise draws per image (per σ for noise-sweep)",
    "--restarts": "PGD restarts; audit applies it to its PGD members",
    "--resume": "continue an interrupted run in --out; each command says what it reuses",
    "--save-adv": "keep the verified adversarial examples in --out (attack: one file per run; audit: one per member)",
    "--seed": "the seed of every random draw of the command; each says what those are",
    "--sigma": "the standard deviation of Gaussian input noise: snr's one σ, certify's list of smoothing σ",
    "--steps": "attack iterations; audit applies it to its PGD members",
    "--test-subset": "score on a class-balanced subset of N test images",
    "--train-subset": "train on a class-balanced subset of N training images",
    "--val-size": "training images held out to pick the best epoch; train's text scopes it to hebb-net",
    "--weight-decay": "the optimizer's L2 penalty (Adam for train, SGD for hebb-net sweeps)",
    "--width": "the channel-width multiplier; each command gives an example of its scale",
    "--zca": "ZCA whitening of the inputs; train's text scopes it to hebb-net",
}


def options() -> dict[str, dict[str, str]]:
    """Every option's help text by option name and command."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for name, command in COMMANDS.items():
        for param in command.params:
            if param.param_type_name == "option":
                for opt in (*param.opts, *param.secondary_opts):
                    found[opt][name] = param.help or ""
    return found


def test_an_option_name_has_one_help_text_unless_reviewed() -> None:
    differing = {opt for opt, texts in options().items() if len(set(texts.values())) > 1}
    short_or_negated = {opt for opt in differing if not opt.startswith("--") or opt.startswith("--no-")}
    assert differing - short_or_negated - set(SAME_MEANING_OTHER_WORDS) == set()


def test_the_allow_list_has_no_stale_entry() -> None:
    texts = options()
    assert [opt for opt in SAME_MEANING_OTHER_WORDS if len(set(texts[opt].values())) < 2] == []


# (command, old spelling, new spelling, value): the old one still works and parses to the same parameters.
RENAMED = [
    ("train", "--norm", "--block-norm", "batch"),
    ("train", "--sigma", "--dn-sigma", "0.5"),
    ("train", "--layers", "--rules", "HHGGGG"),
    *[(name, "--n", "--images", "10") for name in ("sparsity", "snr", "noise-sweep", "corruption-sweep", "attack", "audit", "ablate")],
    *[(name, "--surrogate", "--transfer-from", "source.safetensors") for name in ("attack", "audit")],
]


def parsed(command: str, args: list[str]) -> dict[str, object]:
    cmd = COMMANDS[command]
    required = ["--out", "x.safetensors"] if command == "train" else (["--out", "o"] if command in ("ablate", "hebbian-sweep") else [])
    positional = ["model.safetensors"] if any(p.name == "checkpoints" for p in cmd.params) else []
    with cmd.make_context(command, [*positional, *required, *args], **(cmd.context_settings or {})) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize(("command", "old", "new", "value"), RENAMED)
def test_old_spellings_still_work_and_stay_hidden(command: str, old: str, new: str, value: str) -> None:
    assert parsed(command, [old, value]) == parsed(command, [new, value])
    assert parsed(command, [old, value]) != parsed(command, [])
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output
    assert re.search(rf"{re.escape(new)}\b", shown) and not re.search(rf"{re.escape(old)}\b(?!-)", shown)


def test_every_default_is_shown_in_brackets() -> None:
    """No default in prose; an option with a default shows it, ε-like fractions as fractions."""
    for name, command in COMMANDS.items():
        for param in command.params:
            if not param.param_type_name == "option" or param.name == "help":
                continue
            where = f"{name} {param.opts[0]}"
            assert not re.search(r"\bdefault\b", param.help or "", re.I), f"{where}: default in prose"
            if param.default not in (None, False, ()) and not param.is_flag:
                assert param.show_default is not False, where
            if isinstance(param.default, float) and len(repr(param.default)) > 8:
                assert isinstance(param.show_default, str), f"{where}: shows {param.default!r}"
    shown = CliRunner().invoke(app, ["attack", "--help"], env={"COLUMNS": "300"}).output
    assert re.search(r"--eot-sigma .*\[default: \(?2/255\)?\]", shown) and "0.0078" not in shown


def test_commands_are_grouped_in_help() -> None:
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"}).output
    order = list(dict.fromkeys(entry.panel for entry in ENTRIES.values()))
    assert order == ["Training", "Evaluation", "Attacks", "Studies", "CI"]
    panels = [re.search(rf"─ {panel} ─", shown) for panel in order]
    assert all(panels) and [m.start() for m in panels] == sorted(m.start() for m in panels)  # type: ignore[union-attr]
    for name, entry in ENTRIES.items():  # each command under its panel's title, before the next panel's
        at = shown.index(f"│ {name} ")
        assert panels[order.index(entry.panel)].start() < at  # type: ignore[union-attr]
        assert entry.panel == order[-1] or at < panels[order.index(entry.panel) + 1].start()  # type: ignore[union-attr]
    assert {name: module(name).NAME for name in ENTRIES} == {name: name for name in ENTRIES}
