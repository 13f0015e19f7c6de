"""Models from outside hahrobust (model specs + --weights): the same numbers as the same network saved as a
hahrobust checkpoint, weights that cannot execute code, one-line refusals of models that break the contract,
layer discovery by type or name, and --bpda mappings that stay with their model."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner, Result

from conftest import train_tiny_vgg11
from foreign_model import TopKThreshold, thresholded
from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.cli import app
from hahrobust.data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from hahrobust.errors import HahrobustError
from hahrobust.models import resolve_config
from hahrobust.models.foreign import load_foreign, parse_normalization
from hahrobust.nn import surrogate
from hahrobust.nn.hooks import select_layers
from hahrobust.nn.surrogate import BPDA, Surrogate, surrogate_layers

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why

runner = CliRunner()
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FAST_PGD = ["--attack", "pgd", "--steps", "10", "--restarts", "1", "--n", "20", "--batch-size", "10"]
QUICK_PGD = ["--attack", "pgd", "--steps", "3", "--restarts", "1", "--images", "10"]  # runs the pipeline, not a study


@pytest.fixture(scope="module")
def saved(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained tiny VGG-11 saved three ways: hahrobust checkpoint, torch.save'd state dict, bare safetensors."""
    model = train_tiny_vgg11(load_cifar10(tiny_data, "train")).eval()
    folder = tmp_path_factory.mktemp("foreign")
    paths = {"checkpoint": folder / "vgg11.safetensors", "pt": folder / "state.pt", "st": folder / "bare.safetensors"}
    save_checkpoint(paths["checkpoint"], model, checkpoint_metadata(model, "vgg11", resolve_config("vgg11", width=0.125)[0]))
    torch.save(model.state_dict(), paths["pt"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths["st"]))
    return paths


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """py:tests.foreign_model resolves from the current directory, as it does for a user in the repository."""
    monkeypatch.chdir(REPO)


def invoke(command: str, models: list[str], data: Path, *args: str) -> Result:
    return runner.invoke(app, [command, *models, "--data", str(data), "--device", "cpu", *args])


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def results_table(markdown: str) -> str:
    """The Markdown report up to its checkpoints table (which names the sources, so differs by design)."""
    return markdown.split("## Checkpoints")[0]


def test_attack_table_is_the_checkpoints(saved: dict[str, Path], tiny_data: Path, tmp_path: Path) -> None:
    runs = {
        "checkpoint": [str(saved["checkpoint"])],
        "module spec, torch state dict": ["py:tests.foreign_model:build", "--weights", str(saved["pt"])],
        "file spec, safetensors": ["tests/foreign_model.py:build", "--weights", str(saved["st"])],
    }
    tables, csvs = {}, {}
    for name, models in runs.items():
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        result = invoke("attack", models, tiny_data, *FAST_PGD, "--norm", "l2", "--eps", "1,2", "-l", "vgg", "--out", str(out))
        assert result.exit_code == 0, result.output
        tables[name] = results_table((out / "attack.md").read_text())
        csvs[name] = pd.read_csv(out / "attack.csv").drop(columns="seconds")
    reference = csvs["checkpoint"]
    assert 0 < reference["robust_acc"].iloc[0] < reference["clean_acc"].iloc[0]  # the attack had work to do
    for name in runs:
        assert tables[name] == tables["checkpoint"], name
        pd.testing.assert_frame_equal(csvs[name], reference)

    document = json.loads((tmp_path / "file_spec_safetensors" / "attack.json").read_text())
    source = document["checkpoints"]["vgg"]
    assert source["spec"] == "tests/foreign_model.py:build"
    assert source["sha256"] == hashlib.sha256(saved["st"].read_bytes()).hexdigest()
    assert source["factory_sha256"] == hashlib.sha256((TESTS / "foreign_model.py").read_bytes()).hexdigest()
    assert "foreign_model.py " + source["factory_sha256"][:16] in (tmp_path / "file_spec_safetensors" / "attack.md").read_text()


class Payload:
    """Unpickling this creates a marker file: what a malicious weights file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def test_pickle_with_a_payload_is_refused_unexecuted(tiny_data: Path, tmp_path: Path) -> None:
    marker, factory_marker = tmp_path / "payload-ran", tmp_path / "factory-ran"
    weights = tmp_path / "evil.pt"
    torch.save({"classifier.weight": torch.zeros(10, 64), "extra": Payload(marker)}, weights)
    factory = tmp_path / "factory.py"  # importing it leaves a trace: the weights must be refused before that
    factory.write_text(f"open({str(factory_marker)!r}, 'w').close()\nfrom foreign_model import build\n")
    out = tmp_path / "out"
    message = one_line_error(invoke("attack", [f"{factory}:build", "--weights", str(weights)], tiny_data,
                                    *FAST_PGD, "--out", str(out)))
    assert re.search(r"refused: the pickle holds Python objects \((io|builtins)\.open\)", message), message
    assert not marker.exists() and not factory_marker.exists()
    assert not out.exists()  # nothing written, not even the folder


def write_factory(tmp_path: Path, body: str) -> tuple[str, Path]:
    """A factory file ``make()`` with ``body`` (which defines ``model``) and weights for the model it builds."""
    file = tmp_path / "user_model.py"
    file.write_text("import torch\nfrom torch import nn\n\n" + textwrap.dedent(body) + "\n\ndef make():\n    return model\n")
    namespace: dict[str, object] = {}
    exec(compile(file.read_text(), str(file), "exec"), namespace)
    weights = tmp_path / "w.pt"
    model = namespace["model"]
    torch.save(model.state_dict() if isinstance(model, nn.Module) else {"w": torch.zeros(1)}, weights)
    return f"{file}:make", weights


LINEAR = "nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, {classes}))"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"model = {LINEAR.format(classes=7)}", r"returns shape \(2, 7\).*\[batch, 10\]"),
        ("model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))", r"forward on \[batch, 3×32×32\].*failed: RuntimeError"),
        (f"class Noisy(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.net = {LINEAR.format(classes=10)}\n"
         "    def forward(self, x):\n        return self.net(x + 0.1 * torch.randn_like(x))\nmodel = Noisy()", "two forward passes"),
        (f"class Pooled(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.net = {LINEAR.format(classes=10)}\n"
         "    def forward(self, x):\n        return self.net(x - x.mean(dim=0))\nmodel = Pooled()", "depend on the other images"),
        (f"class Detached(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.net = {LINEAR.format(classes=10)}\n"
         "    def forward(self, x):\n        return self.net(x.detach())\nmodel = Detached()", "gradients do not reach the input"),
        (f"class Pair(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.net = {LINEAR.format(classes=10)}\n"
         "    def forward(self, x):\n        return self.net(x), x\nmodel = Pair()", "returns a tuple"),
        (f"class Stubborn(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.net = {LINEAR.format(classes=10)}\n"
         "    def train(self, mode=True):\n        return self\n    def forward(self, x):\n        return self.net(x)\n"
         "model = Stubborn()\nmodel.training = True", "stays in training mode"),
        ("model = 3", "make\\(\\) returned a int, not a torch.nn.Module"),
    ],
    ids=["classes", "input", "random", "batch", "detached", "tuple", "training", "not-module"],
)
def test_models_that_break_the_contract_are_refused(tiny_data: Path, tmp_path: Path, body: str, message: str) -> None:
    spec, weights = write_factory(tmp_path, body)
    out = tmp_path / "out"
    assert re.search(message, one_line_error(invoke("noise-sweep", [spec, "--weights", str(weights)],
                                                                   tiny_data, "--out", str(out))))
    assert not out.exists()  # nothing written, not even the folder


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (["py:tests.foreign_model:build"], "got 0 --weights for 1 model spec"),
        (["py:tests.foreign_model:build", "--weights", "w.pt", "--weights", "v.pt"], "got 2 --weights for 1"),
        (["py:no_such_package_xyz:build", "--weights", "{st}"], "cannot import no_such_package_xyz"),
        (["py:tests.foreign_model:missing", "--weights", "{st}"], "has no attribute 'missing'"),
        (["py:tests.foreign_model", "--weights", "{st}"], "expected py:PACKAGE.MODULE:FACTORY"),
        (["py:tests.foreign_model:vgg16_small", "--weights", "{st}"], "does not fit .*: 35 missing .*with another shape"),
        (["py:tests.foreign_model:build", "--weights", "{missing}"], "file not found"),
        (["py:tests.foreign_model:build", "--weights", "{text}"], "neither a safetensors file nor a PyTorch state dict"),
        (["py:tests.foreign_model:build", "--weights", "{st}", "--normalize", "0.5,0"], "std must be > 0"),
        (["py:tests.foreign_model:build", "--weights", "{st}", "--normalize", "1/2,3"], "1 or 3 values"),
        (["{checkpoint}", "--normalize", "cifar10"], "--normalize applies to model specs"),
    ],
)
def test_bad_specs_and_weights(saved: dict[str, Path], tiny_data: Path, tmp_path: Path, models: list[str], message: str) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    values = {"st": saved["st"], "checkpoint": saved["checkpoint"], "missing": tmp_path / "nope.pt", "text": text}
    args = [m.format(**values) for m in models]
    assert re.search(message, one_line_error(invoke("noise-sweep", args, tiny_data)))


def test_normalize_wraps_a_model_that_expects_standardized_images(saved: dict[str, Path], tmp_path: Path) -> None:
    """The same weights without the model's own normalization, plus --normalize: the very same logits."""
    state = torch.load(saved["pt"], weights_only=True)
    bare = {k: v for k, v in state.items() if not k.startswith("normalize.")}
    torch.save(bare, tmp_path / "bare.pt")
    factory = tmp_path / "bare_model.py"
    factory.write_text("from torch import nn\nfrom foreign_model import build\n\n"
                       "def make():\n    model = build()\n    model.normalize = nn.Identity()\n    return model\n")
    per_channel = ",".join("/".join(str(v) for v in values) for values in (CIFAR10_MEAN, CIFAR10_STD))
    normalized, source = load_foreign(f"{factory}:make", tmp_path / "bare.pt", normalize=parse_normalization(per_channel))
    reference, _ = load_foreign("py:tests.foreign_model:build", saved["pt"])
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(normalized(x), reference(x))
    assert source.normalize == per_channel
    assert [n for n, _ in normalized.named_modules()] == [n for n, _ in reference.named_modules()]  # names kept
    unnormalized, _ = load_foreign(f"{factory}:make", tmp_path / "bare.pt")
    assert not torch.equal(unnormalized(x), reference(x))


def test_select_layers_by_type_base_type_and_name() -> None:
    model = thresholded()
    assert select_layers(model, "ReLU") == [f"features.block{i}.relu" for i in range(1, 9)]
    # Conv2d also picks the subclass UnitNormConv; a glob picks by name; order is the forward order.
    assert select_layers(model, "TopKThreshold, features.block1.conv")[:2] == ["features.block1.conv", "features.block1.threshold"]
    assert len(select_layers(model, "Conv2d")) == 8
    for selector, message in [("Conv3d", "matches no module"), ("", "empty")]:
        with pytest.raises(HahrobustError, match=message):
            select_layers(model, selector)
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 4, 3), shared, nn.Conv2d(4, 4, 3), shared)
    with pytest.raises(HahrobustError, match="called 2 times"):
        select_layers(twice, "ReLU")
    with pytest.raises(HahrobustError, match="spare is never called"):
        select_layers(WithSpare(), "*")


class WithSpare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.spare = nn.Conv2d(3, 4, 3), nn.ReLU()  # the spare is registered, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_sparsity_and_snr_of_a_foreign_model_match_the_block_view(saved: dict[str, Path], tiny_data: Path, tmp_path: Path) -> None:
    """The baseline VGG's blocks are measured at their ReLU output (sparsity) and conv input (SNR); picking the
    same layers by type in the foreign copy gives the same numbers."""
    spec = ["py:tests.foreign_model:build", "--weights", str(saved["pt"])]
    refused = one_line_error(invoke("sparsity", spec, tiny_data, "--n", "10"))
    assert "name the layers to measure with --layers" in refused
    only_checkpoints = one_line_error(invoke("snr", [str(saved["checkpoint"])], tiny_data, "--layers", "ReLU"))
    assert "hahrobust checkpoints are measured per block" in only_checkpoints
    for command, common, extra, values in [
        ("sparsity", [], ["--layers", "ReLU"], ["hoyer", "nonzero", "zero_locations"]),
        ("snr", ["--repeats", "1"], [], ["snr_db"]),  # a foreign model's default: --layers Conv2d
    ]:
        frames = []
        for models, args in [([str(saved["checkpoint"])], common), (spec, [*common, *extra])]:
            out = tmp_path / f"{command}-{len(frames)}"
            result = invoke(command, models, tiny_data, "--n", "10", "-l", "vgg", *args, "--out", str(out))
            assert result.exit_code == 0, result.output
            frames.append(pd.read_csv(out / f"{command}.csv"))
        block_view, foreign = frames
        assert len(block_view) == len(foreign) == 8
        pd.testing.assert_frame_equal(foreign[values], block_view[values])
        layer = "relu" if command == "sparsity" else "conv"
        assert foreign["block_name"].tolist() == [f"features.block{i}.{layer}" for i in range(1, 9)]
    snr_settings = json.loads((tmp_path / "snr-1" / "snr.json").read_text())["settings"]
    assert snr_settings["layers"] == "Conv2d"


def test_bpda_mapping_reaches_only_its_model(saved: dict[str, Path], tiny_data: Path, tmp_path: Path) -> None:
    registered = dict(surrogate._REGISTERED)
    model, _ = load_foreign("py:tests.foreign_model:thresholded", saved["pt"])
    with pytest.raises(ValueError, match="no layer with a surrogate gradient"):
        BPDA(model)  # hahrobust does not know TopKThreshold by itself
    threshold_type = type(model.get_submodule("features.block1.threshold"))  # tests.foreign_model's, not ours
    assert threshold_type.__name__ == TopKThreshold.__name__
    wrapped = BPDA(model, Surrogate("sigmoid"), types={threshold_type: "sigmoid"})
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain_x, bpda_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    plain, smooth = model(plain_x), wrapped(bpda_x)
    assert torch.equal(plain, smooth)  # forward exact
    plain[:, 0].sum().backward()
    smooth[:, 0].sum().backward()
    assert not torch.allclose(plain_x.grad, bpda_x.grad)  # backward through the surrogate
    assert surrogate_layers(model) == []  # the mapping stayed with the wrapper

    spec = ["py:tests.foreign_model:thresholded", "--weights", str(saved["pt"])]
    out = tmp_path / "out"
    result = invoke("attack", [str(saved["checkpoint"]), *spec], tiny_data, *QUICK_PGD, "--bpda", "TopKThreshold=sigmoid",
                    "-l", "base", "-l", "sparse", "--out", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads((out / "attack.json").read_text())
    assert document["settings"]["gradient"]["name"] == "bpda" and document["settings"]["bpda"] == {"TopKThreshold": "sigmoid"}
    assert any("base has no layer with a surrogate gradient" in note for note in document["notes"])
    assert surrogate._REGISTERED == registered

    for args, message in [(["--bpda", "TopKThreshold"], "expected MODULE_TYPE=KIND"),
                          (["--bpda", "TopKThreshold=tanh"], "expected MODULE_TYPE=KIND"),
                          (["--bpda", "TopKThreshold=sigmoid", "--gradient", "eot"], "--gradient bpda or bpda\\+eot"),
                          (["--bpda", "Dropout=identity"], "no model has a module of that type")]:
        assert re.search(message, one_line_error(invoke("attack", spec, tiny_data, *QUICK_PGD, *args)))


def test_hahtorch_thresholds_are_recognised() -> None:
    hahtorch = pytest.importorskip("hahtorch")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        # Average pooling reads every location, those near the threshold too (where the surrogate differs).
        model = nn.Sequential(hahtorch.HaHBlock(3, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    assert [type(m).__name__ for _, m in surrogate_layers(model)] == ["FractionalThreshold"]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain_x, bpda_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    plain, smooth = model(plain_x), BPDA(model)(bpda_x)
    assert torch.equal(plain, smooth)
    plain[:, 0].sum().backward()
    smooth[:, 0].sum().backward()
    assert not torch.allclose(plain_x.grad, bpda_x.grad)


def test_a_model_spec_goes_through_the_audit_next_to_a_checkpoint(saved: dict[str, Path], tiny_data: Path, tmp_path: Path) -> None:
    """The audit takes specs like attack does: the thresholded foreign model gets the BPDA members through its
    --bpda mapping, the checkpoint (no threshold) does not, and the results carry the spec's provenance."""
    spec = ["py:tests.foreign_model:thresholded", "--weights", str(saved["pt"])]
    out = tmp_path / "audit"
    result = invoke("audit", [str(saved["checkpoint"]), *spec], tiny_data, "--norm", "linf", "--steps", "3",
                    "--restarts", "1", "--images", "10", "--skip", "AutoAttack,APGD·BPDA,PGD·EOT,Square", "-l", "base",
                    "-l", "sparse", "--bpda", "TopKThreshold=sigmoid", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "audit.csv")
    assert set(rows.loc[rows["model"] == "sparse", "attack"]) == {
        "PGD", "PGD·BPDA", "PGD·BPDA·margin", "BPDA sweep", "smooth twin", "more effort", "worst case",
        *(f"{m} (plain twin)" for m in ("PGD·BPDA", "PGD·BPDA·margin", "BPDA sweep", "smooth twin")),
    }  # the sweep and the smooth twin take the --bpda mapping too; each gradient-changing member has its plain twin
    assert set(rows.loc[rows["model"] == "base", "attack"]) == {"PGD", "more effort", "worst case"}
    # without a threshold, "more effort" is plain PGD (with one, it goes through BPDA)
    assert set(rows.loc[rows["attack"] == "more effort", "gradient"]) == {"plain", "bpda"}
    document = json.loads((out / "audit.json").read_text())
    assert document["settings"]["bpda"] == {"TopKThreshold": "sigmoid"}
    assert "tests.foreign_model:thresholded" in json.dumps(document["checkpoints"])
    assert (out / "audit-diagnostics.csv").is_file() and not (out / "journal").exists()
