"""The tiny model pair and report the report's test files share (tests/test_report.py, tests/test_report_jobs.py):
split in files so that pytest-xdist's two workers (``--dist loadfile``) share the report's minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import train_tiny_vgg11
from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.data import load_cifar10
from hahrobust.evaluate import open_models
from hahrobust.models import resolve_config
from hahrobust.report import resolve, run_report

#: AutoAttack dominates (≈ 3 s per image and norm on the robust tiny baseline): few attacked images.
#: One cheap corruption (its 5 severities) covers the corruption step, its claim, table and figure.
TINY = dict(images=20, attack_images=4, steps=3, restarts=1, repeats=1, corruptions="gaussian_noise")


@pytest.fixture(scope="module")
def pair(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two trained tiny VGG-11 checkpoints: HaH (thresholded) and the plain baseline."""
    folder = tmp_path_factory.mktemp("report-pair")
    train = load_cifar10(tiny_data, "train", cache_dir=folder / "cache")
    paths = []
    for name, hah in (("hah-vgg11", True), ("vgg11", False)):
        model = train_tiny_vgg11(train, epochs=4, hah=hah).eval()
        family, _ = resolve_config(name, width=0.125)
        path = folder / f"{name}.safetensors"
        save_checkpoint(path, model, checkpoint_metadata(model, name, family, seed=0))
        paths.append(path)
    return paths[0], paths[1]


def _report(pair: tuple[Path, Path], tiny_data: Path, out: Path, **kwargs):
    models = open_models(list(pair))
    test = load_cifar10(tiny_data, "test")
    return run_report(models, test, resolve("quick", **TINY), out=out, seed=0, batch_size=8, **kwargs)


@pytest.fixture(scope="module")
def whole(pair, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted report, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("whole")
    return _report(pair, tiny_data, out), out
