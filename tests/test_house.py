"""The floor plan holds: layers import one way (ARCHITECTURE.md's order), no package cycle, rooms of a readable
size, an attack added through the registry alone runs in `hahrobust attack` and joins `hahrobust audit`, and the
documented library entry points import."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import hahrobust
from hahrobust.attacks import registry
from hahrobust.attacks.norms import project
from hahrobust.attacks.registry import AttackSpec, AuditRole
from hahrobust.checkpoint import checkpoint_metadata, save_checkpoint
from hahrobust.cli import app
from hahrobust.data import load_cifar10
from hahrobust.models import resolve_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hahrobust"
MAX_LINES = 450


def _layers() -> dict[str, int]:
    """Package or module name → its layer number, from ARCHITECTURE.md's numbered list under "## Layers"."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for number, names in re.findall(r"^(\d+)\. (.+)$", section, flags=re.M):
        for name in names.split(","):
            layers[name.strip()] = int(number)
    return layers


def _unit(module: str) -> str:
    """The top-level room a dotted module belongs to (``hahrobust.attacks.pgd`` → ``attacks``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hahrobust"


def _imports() -> list[tuple[str, str, str]]:
    """(importing file, its room, the imported room) for every hahrobust import anywhere in a module (functions too)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue  # the package face: re-exports, above every layer
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for target in _imported_names(path):
            if target.startswith("hahrobust"):
                found.append((str(path.relative_to(ROOT)), _unit(module), _unit(target)))
    return found


def _imported_names(path: Path) -> list[str]:
    """Every absolute import in ``path``, anywhere (functions, ``if TYPE_CHECKING:``), as a dotted name:
    ``import a.b`` → ``a.b``; ``from a.b import c`` → ``a.b.c``."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_every_room_is_in_a_layer() -> None:
    layers = _layers()
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms - set(layers) == set(), "add the new package or module to ARCHITECTURE.md's layers"


def test_imports_run_from_higher_layers_to_lower_ones_only() -> None:
    layers = _layers()
    upward = [f"{file}: {room} (layer {layers[room]}) imports {target} (layer {layers[target]})"
              for file, room, target in _imports() if room != target and layers[target] > layers[room]]
    assert upward == []


def test_rooms_form_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for _, room, target in _imports():
        if room != target:
            graph.setdefault(room, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [room for room in graph if reaches(room, room, {room})] == []


def _module_of(dotted: str) -> str | None:
    """The hahrobust module a dotted import target names (``hahrobust.studies.audit.ModelAudit`` → its module)."""
    parts = dotted.split(".")
    while parts:
        base = ROOT.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def _module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the hahrobust modules it imports, within one room (package), any import anywhere in it
    (functions and ``if TYPE_CHECKING:`` blocks included: a circle of annotations is still a circle to read)."""
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in _imported_names(path):
            target = _module_of(name) if name.startswith("hahrobust") else None
            if target and target != module and _unit(target) == _unit(module) and not target.endswith("__init__"):
                graph.setdefault(module.removesuffix(".__init__"), set()).add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[str]:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    return sorted(m for m in graph if reaches(m, m, {m}))


def test_modules_inside_a_room_form_no_import_cycle() -> None:
    """The audit's modules once imported each other in a circle (audit ↔ audit_verdict, through an annotation);
    a module's parts read one way, as the rooms do. A package's ``__init__`` may re-export its modules."""
    graph = {m: {t for t in targets if t not in {m.rsplit(".", 1)[0]}} for m, targets in _module_graph().items()
             if not (ROOT.joinpath(*m.split(".")) / "__init__.py").is_file()}
    assert _circles(graph) == []
    # The check can fail: the circle as it was.
    assert _circles({"a.audit": {"a.audit_verdict"}, "a.audit_verdict": {"a.audit"}}) == ["a.audit", "a.audit_verdict"]


def test_a_layer_violation_is_caught(tmp_path: Path) -> None:
    """The check can fail: an upward import in a lower room is reported."""
    layers = _layers()
    assert layers["data"] < layers["attacks"] < layers["cli"]
    tree = ast.parse("from hahrobust.cli import app\n")
    (node,) = tree.body
    assert isinstance(node, ast.ImportFrom) and layers[_unit(node.module)] > layers["data"]


def test_no_module_is_longer_than_the_limit_unless_its_docstring_says_why() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and f"longer than {MAX_LINES} lines" not in docstring:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert long == []


def test_the_runner_has_no_per_attack_branch() -> None:
    """Adding an attack never edits the runner: it names no registered attack."""
    source = (PACKAGE / "attacks" / "run.py").read_text()
    named = [name for name in registry.names() if f'"{name}"' in source or f"'{name}'" in source]
    assert named == []


# ------------------------------------------------------------------------------------- a new attack


@dataclasses.dataclass(frozen=True)
class RandomSearchConfig:
    tries: int = 20


def random_search(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                  indices: torch.Tensor, seed: int, config: RandomSearchConfig) -> torch.Tensor:
    """A toy attack: random corners of the ε-ball, seeded per image; the first that fools the model is kept."""
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for t in range(config.tries):
        noise = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(seed * 1000 + int(i) * 37 + t))
                             for i in indices])
        candidate = x + project(eps * noise.sign(), x, eps, norm)
        with torch.no_grad():
            new = (model(candidate).argmax(1) != y) & ~fooled
        best[new] = candidate[new]
        fooled |= new
    return best


@pytest.fixture()
def toy_attack():
    spec = registry.register(AttackSpec(
        "random-search", ("linf",), RandomSearchConfig, random_search, title="random search",
        options={"queries": "tries"}, audit=AuditRole("random search", "black-box", survivors=True),
    ))
    yield spec
    registry.unregister(spec.name)


@pytest.fixture(scope="module")
def checkpoint(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained VGG-11 (width 0.125): some images are right by chance, enough for an attack to have work."""
    torch.manual_seed(0)
    family, _ = resolve_config("vgg11", width=0.125)
    model = hahrobust.build("vgg11", width=0.125).eval()
    path = tmp_path_factory.mktemp("house") / "vgg11.safetensors"
    save_checkpoint(path, model, checkpoint_metadata(model, "vgg11", family))
    return path


def test_an_attack_registered_alone_runs_in_the_attack_command(toy_attack, checkpoint: Path, tiny_data: Path,
                                                                tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["attack", str(checkpoint), "--attack", "random-search", "--queries", "5",
                                      "--eps", "8/255", "--images", "20", "--data", str(tiny_data), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "attack.csv")
    assert rows["attack"].tolist() == ["random-search"] and rows["n"].tolist() == [20]
    assert rows["robust_acc"].item() <= rows["clean_acc"].item()  # verified like every attack's examples
    assert "random search" in (tmp_path / "attack.md").read_text()  # its title, from the registry
    assert '"random-search": {"tries": 5}' in (tmp_path / "attack.json").read_text().replace("\n", "").replace("  ", "")


def test_an_attack_registered_with_an_audit_role_joins_the_audit(toy_attack, checkpoint: Path, tiny_data: Path) -> None:
    from hahrobust.studies.audit import default_ensemble

    names = [m.name for m in default_ensemble()]
    assert names[-2:] == ["random search", "more effort"]  # registered members run before the convergence rounds
    unknown = CliRunner().invoke(app, ["audit", str(checkpoint), "--skip", "nothing", "--data", str(tiny_data)])
    assert unknown.exit_code == 2 and "random-search" in unknown.output  # listed among the members, by its key
    skipped = CliRunner().invoke(app, ["audit", str(checkpoint), "--skip", "random-search,nothing", "--data", str(tiny_data)])
    assert "unknown member 'nothing'" in skipped.output  # "random-search" itself was accepted


def test_the_library_runs_what_the_command_runs(checkpoint: Path, tiny_data: Path) -> None:
    """`hahrobust.open_models` + `hahrobust.evaluate.noise_sweep` give the command's rows."""
    from hahrobust import evaluate
    from hahrobust.data import balanced_subset

    test = balanced_subset(load_cifar10(tiny_data, "test"), 20, seed=0)
    models = hahrobust.open_models([checkpoint], labels=["net"])
    result = evaluate.noise_sweep(models, test, sigmas=[0.0, 0.1], repeats=1)
    assert result.rows["model"].tolist() == ["net", "net"] and result.settings["subset"] is True
    module = models[0].model
    again = evaluate.noise_sweep({"net": module}, test, sigmas=[0.0, 0.1], repeats=1)  # a module from a notebook
    pd.testing.assert_frame_equal(result.rows, again.rows)
    assert again.checkpoints["net"].sha256  # an in-memory module is recorded by its state dict's hash


def test_the_readme_and_documented_import_paths_work() -> None:
    """Every `from hahrobust… import …` in the README's, the documentation's and ARCHITECTURE.md's code resolves;
    the old module paths (hahrobust.cifar10c, hahrobust.corruptions) still do, with a deprecation warning and the
    date they go."""
    pages = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    statements = re.findall(r"^\s*(from hahrobust[\w.]* import [\w, ()]+|import hahrobust[\w.]*)\s*(?:#.*)?$", text, flags=re.M)
    assert statements, "the README shows the library"
    for statement in statements:
        exec(statement, {})  # noqa: S102 — imports only
    assert "hahrobust.cifar10c" not in text and "hahrobust.corruptions" not in text  # the pages use the new paths
    import sys

    for old in ("hahrobust.cifar10c", "hahrobust.corruptions"):
        sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="removed after 2027-06-01: import hahrobust.data.cifar10c"):
        from hahrobust.cifar10c import GeneratedCorruptions
    with pytest.warns(DeprecationWarning, match="import hahrobust.data.corruptions"):
        from hahrobust.corruptions import BENCHMARK
    from hahrobust.data.cifar10c import GeneratedCorruptions as moved

    assert GeneratedCorruptions is moved and len(BENCHMARK) == 15
