"""hahrobust report: end to end on tiny data and models (seconds), a killed run resumes to the identical report,
bad input fails in one line with nothing written, the per-image metrics agree with the aggregate ones, and the
HTML is self-contained (every figure a PNG data URI; in headless Chromium when installed)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hahrobust.cli import app
from hahrobust.data import balanced_subset, load_cifar10
from hahrobust.errors import HahrobustError
from hahrobust.evaluate import open_models
from hahrobust.metrics.noise import noise_accuracy, noise_correct
from hahrobust.metrics.snr import snr, snr_per_image, to_db
from hahrobust.metrics.sparsity import hoyer_per_image, sparsity
from hahrobust.regression import Status, compare, read_results
from hahrobust.report.claims import PLAIN_ONLY
from hahrobust.report.rules import VERDICTS

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest.single_thread explains why

from report_support import TINY, _report, pair, whole  # noqa: F401 — fixtures (pytest finds them here)


def test_a_killed_report_resumes_to_the_identical_report(pair, whole, tiny_data: Path, tmp_path: Path) -> None:
    whole, folder = whole
    document = json.loads((folder / "report.json").read_text())
    assert document["command"] == "report" and document["rows"]
    assert {j.final for j in whole.judged} <= set(VERDICTS) | {PLAIN_ONLY}
    assert {"clean-cost", "noise", "corruptions", "autoattack-linf", "worst-l2", "sparser", "snr", "distance-l0"} <= {
        j.claim.key for j in whole.judged}
    holm = [j.p_adjusted for j in whole.judged if np.isfinite(j.p_adjusted)]
    raw = [j.claim.comparison.p_value for j in whole.judged if np.isfinite(j.p_adjusted)]
    assert all(h >= r for h, r in zip(holm, raw))  # Holm never lowers a p-value

    class Killed(Exception):
        pass

    def kill(step: str) -> None:
        if step == "audit-a":
            raise Killed

    with pytest.raises(Killed):
        _report(pair, tiny_data, tmp_path / "killed", after_step=kill)
    assert not (tmp_path / "killed" / "report.json").exists()
    with pytest.raises(HahrobustError, match="pass --resume"):
        _report(pair, tiny_data, tmp_path / "killed")
    resumed = _report(pair, tiny_data, tmp_path / "killed", resume=True)
    assert "audit-a" not in resumed.seconds and "audit-b" in resumed.seconds  # finished steps were read back
    for name in ("report.json", "report.md", "report.html"):
        assert (tmp_path / "killed" / name).read_bytes() == (folder / name).read_bytes(), name
    comparison = compare(read_results(tmp_path / "killed" / "report.json"), read_results(folder / "report.json"))
    assert comparison.status == Status.OK


def test_under_torchrun_the_report_is_refused_in_one_line(monkeypatch, pair, tmp_path: Path) -> None:
    """Two ranks would both write the step store and the report's files: refused before anything is read."""
    from hahrobust import distributed

    monkeypatch.setattr(distributed, "current", lambda: distributed.Shard(0, 2))
    code, output = _cli(str(pair[0]), str(pair[1]), "--data", "nowhere", "--out", str(tmp_path / "r"))
    assert code == 2 and "runs in one process" in output and "--jobs" in output and len(output.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_the_html_is_self_contained_and_every_figure_is_a_png(whole) -> None:
    page = (whole[1] / "report.html").read_text()
    sources = re.findall(r"<img[^>]* src='([^']*)'", page)
    assert len(sources) == 6 and len(re.findall(r"<img", page)) == 6
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)  # nothing fetched from anywhere


@pytest.mark.slow
def test_the_html_renders_in_headless_chromium(whole, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = whole[1] / "report.html"
    # Mark each image decoded or broken in the DOM, then dump it; console errors go to stderr.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", "<script>window.onload=()=>{for(const i of document.images)"
                     "i.setAttribute('data-ok', String(i.complete&&i.naturalWidth>0));}</script></body>"))
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000"]
    done = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    states = re.findall(r'data-ok="(\w+)"', done.stdout)
    assert states == ["true"] * 6, states
    assert "Uncaught" not in done.stderr and "CONSOLE" not in done.stderr.upper().replace("CONSOLE(", "")
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------------------------------- bad input


def _cli(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["report", *argv])
    return result.exit_code, result.output


def test_bad_input_is_one_line_exit_2_and_nothing_written(pair, whole, tiny_data: Path, tmp_path: Path,
                                                          make_checkpoint) -> None:
    hah, base = (str(p) for p in pair)
    data = ["--data", str(tiny_data)]
    common = [*data, "--budget", "quick", "--images", "20", "--attack-images", "4", "--steps", "3"]
    out = tmp_path / "out"
    five = str(make_checkpoint("vgg11", num_classes=5))
    for argv, message in (
        ([hah, *common], "two models"),
        ([hah, base, *data, "--budget", "huge"], "unknown budget 'huge'"),
        ([hah, five, *common], "classes"),
        ([hah, base, *data, "--images", "0"], "--images must be at least 1"),
        ([hah, base, *common, "--corruptions", "fog,rain"], "unknown corruption 'rain'"),
    ):
        code, output = _cli(*argv, "--out", str(out))
        assert code == 2, output
        assert message in output and "Traceback" not in output and len(output.strip().splitlines()) == 1, output
        assert not out.exists()
    # the whole report's steps, resumed from the command line with its settings: every step read back, the same files
    shutil.copytree(whole[1], out)
    tiny = [*common, "--restarts", "1", "--repeats", "1", "--corruptions", "gaussian_noise", "--batch-size", "8"]
    code, output = _cli(hah, base, *tiny, "--out", str(out), "--resume")
    assert code == 0, output
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before[out / "report.json"] == (whole[1] / "report.json").read_bytes()
    tiny[tiny.index("--steps") + 1] = "4"
    code, output = _cli(hah, base, *tiny, "--out", str(out), "--resume")
    assert code == 2 and "other settings (audit, budget)" in output, output  # --steps is the audit's PGD too
    code, output = _cli(hah, base, *common, "--out", str(out))
    assert code == 2 and "--resume" in output, output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing changed or half-written


# ------------------------------------------------------------------------------------ per-image metrics


def test_per_image_metrics_agree_with_the_aggregate_ones(pair, tiny_data: Path) -> None:
    model = open_models([pair[0]])[0].model
    test = balanced_subset(load_cifar10(tiny_data, "test"), 20, seed=0)
    correct = noise_correct(model, test, [0.0, 0.1], repeats=2, seed=3, batch_size=7)
    table = noise_accuracy(model, test, [0.0, 0.1], repeats=2, seed=3, batch_size=20)
    np.testing.assert_allclose(correct.mean(axis=(0, 2)), table["accuracy"], atol=1e-12)
    ratio = snr_per_image(model, test, 0.1, repeats=2, seed=3, batch_size=7)
    np.testing.assert_allclose(to_db(ratio.mean(axis=0)), snr(model, test, 0.1, repeats=2, seed=3)["snr_db"], atol=1e-9)
    one = balanced_subset(test, 1, seed=0)  # one image: its own mean over locations is the pooled value
    np.testing.assert_allclose(hoyer_per_image(model, one, 4)[0], sparsity(model, one, 4)["hoyer"], atol=1e-9)
    assert hoyer_per_image(model, test, 4, batch_size=7).shape == (20, 4)


def test_the_corruption_step_agrees_with_corruption_sweep(pair, whole, tiny_data: Path) -> None:
    """The report's per-image corruption results, pooled, are corruption-sweep's accuracies on the same images."""
    from hahrobust.data.cifar10c import GeneratedCorruptions
    from hahrobust.studies.corruption import corruption_accuracy

    report, _ = whole
    models = {m.label: m.model for m in open_models(list(pair))}
    stats_set = balanced_subset(load_cifar10(tiny_data, "test"), TINY["images"], seed=0)
    sweep = corruption_accuracy(models, stats_set, GeneratedCorruptions(stats_set, 0), ["gaussian_noise"], batch_size=8)
    table = report.tables["corruptions"]
    for label in models:
        expected = sweep[(sweep["model"] == label) & (sweep["corruption"] == "gaussian_noise")]["accuracy"].mean()
        shown = table[(table["model"] == label) & (table["item"] == "gaussian noise")]
        assert float(shown["accuracy"].iloc[0]) == pytest.approx(expected)
        assert int(shown["n"].iloc[0]) == 5 * TINY["images"]


def test_the_headline_summary_quotes_the_report(whole) -> None:
    from hahrobust.report.summary import HEADLINE, summary_markdown

    report, folder = whole
    document = json.loads((folder / "report.json").read_text())
    table = summary_markdown(document, link="r/report.md")
    rows = [line for line in table.splitlines() if line.startswith("| A ")]
    verdicts = {j.claim.key: j.final for j in report.judged}
    assert len(rows) == len(HEADLINE) == 5
    for key, row in zip(HEADLINE, rows):
        assert row.endswith(f"**{verdicts[key]}** |"), (key, row)
    assert "(r/report.md)" in table
    with pytest.raises(KeyError, match="no claim nonsense"):
        summary_markdown(document, keys=("nonsense",))


def test_the_spsa_survivors_benchmark_reads_a_report(pair, whole, tiny_data: Path, tmp_path: Path) -> None:
    """benchmarks/spsa_survivors.py attacks exactly the audit's survivors of a finished report (a smoke test)."""
    import sys

    _, folder = whole
    out = tmp_path / "spsa.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "spsa_survivors.py"
    done = subprocess.run([sys.executable, str(script), str(folder), str(pair[0]), "--side", "a", "--data",
                           str(tiny_data), "--steps", "3", "--json", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    audit = np.load(folder / "steps" / "audit-a.npz")
    assert [r["survivors"] for r in rows] == [int(audit["linf.worst"].sum()), int(audit["l2.worst"].sum())]
    assert all(0 <= r["broken_by_spsa"] <= r["survivors"] for r in rows)
    assert all(r["forward_passes"] > 0 and r["backward_passes"] == 0 for r in rows if r["survivors"])
    wrong = subprocess.run([sys.executable, str(script), str(folder), str(pair[1]), "--side", "a", "--data",
                            str(tiny_data)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode != 0 and "is not the report's model a" in wrong.stderr


def test_adaptive_distances_take_the_audits_breaks_as_upper_bounds() -> None:
    """An image the audit broke at ε is at most ε away, whatever a weaker minimum-norm attack found; an image it
    left robust keeps the attacks' distance; the plain-gradient distances ignore the audit."""
    from hahrobust.report.claims import distances
    from hahrobust.report.steps import TABLE_EPS

    eps = TABLE_EPS["linf"]
    found = np.array([0.5, 0.5, 0.001, 0.5])
    steps = {"fmn-plain-a-linf": {"arrays": {"distance": found}},
             "fmn-bpda-a-linf": {"arrays": {"distance": found + 0.1}},
             "audit-a": {"arrays": {"correct": np.array([True, True, True, False]),
                                    "linf.worst": np.array([False, True, False, False])}}}
    assert distances(steps, "a", "linf", adaptive=False).tolist() == found.tolist()
    assert distances(steps, "a", "linf", adaptive=True).tolist() == pytest.approx([eps, 0.5, 0.001, 0.5])
    # an image AutoAttack broke at ε and the audit did not is at most ε away too: the worst case counts both
    steps["autoattack-a-linf"] = {"arrays": {"robust": np.array([False, False, False, False])}}
    assert distances(steps, "a", "linf", adaptive=True).tolist() == pytest.approx([eps, eps, 0.001, 0.5])


def test_the_worst_case_counts_what_autoattack_broke() -> None:
    """The audit does not run AutoAttack: an image only AutoAttack broke is not robust in the worst case, so the
    worst case is never above AutoAttack's figure (without an AutoAttack step, the audit's alone)."""
    from hahrobust.report.claims import worst_case

    arrays = {"audit-a": {"linf.worst": np.array([True, True, False]), "l2.worst": np.array([True, True, False])},
              "autoattack-a-linf": {"robust": np.array([True, False, True])}}
    assert worst_case(arrays, "a", "linf").tolist() == [True, False, False]
    assert worst_case(arrays, "a", "l2").tolist() == [True, True, False]


def test_the_summary_script_refuses_a_missing_or_foreign_file_in_one_line(tmp_path: Path) -> None:
    import sys

    foreign = tmp_path / "foreign.json"
    foreign.write_text("{}")
    for path, message in ((tmp_path / "absent.json", "No such file"), (foreign, "not a report written by hahrobust")):
        done = subprocess.run([sys.executable, "-m", "hahrobust.report.summary", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
