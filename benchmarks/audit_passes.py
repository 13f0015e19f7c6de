"""The audit's cost in passes: the second edition's default ensemble against the first edition's, same images.

Passes (forward and backward image-passes through the model and the transfer source, counted by
:func:`hahrobust.attacks.passes.count_passes`) do not depend on the machine or its load, so the two ensembles compare
where seconds on a shared CPU would not. For each reference model and norm it audits the same images with both
ensembles and reports each one's passes, their ratio, and both worst cases (the cheaper ensemble must not be weaker).

The first edition, as it ran until this change: AutoAttack (standard) and every gradient member on every image
(PGD, PGD·BPDA, ·margin, APGD·BPDA, PGD·EOT, transfer), then one more-effort round (4× steps, 2× restarts) and
Square (1,000 queries) on the survivors.

    python benchmarks/audit_passes.py --data ../shared/data/cifar10-jpeg.tar.gz --images 100 --json passes.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hahrobust.checkpoint import load_checkpoint  # noqa: E402
from hahrobust.data import balanced_subset, load_cifar10  # noqa: E402
from hahrobust.provenance import git_commit, versions  # noqa: E402
from hahrobust.studies.audit import AuditConfig, Member, audit_model  # noqa: E402
from hahrobust.attacks.square import SquareConfig  # noqa: E402

FIRST_EDITION = (
    Member("AutoAttack", "standard", "autoattack", survivors=False),
    Member("PGD", "white-box", "pgd", survivors=False),
    Member("PGD·BPDA", "adaptive", "pgd", gradient="bpda", survivors=False),
    Member("PGD·BPDA·margin", "adaptive", "pgd", gradient="bpda", loss="margin", restarts=1, survivors=False),
    Member("APGD·BPDA", "adaptive", "autoattack", gradient="bpda", aa_version="paper", survivors=False),
    Member("PGD·EOT", "adaptive", "pgd", gradient="bpda+eot", survivors=False),
    Member("transfer", "transfer", "pgd", transfer=True, survivors=False),
    Member("more effort", "adaptive", "pgd", gradient="bpda", effort=True),
    Member("Square", "black-box", "square"),
)
#: The first edition's budgets: one more-effort round at 4× steps and 2× restarts, Square at 1,000 queries.
FIRST_CONFIG = AuditConfig(effort_steps=4, effort_restarts=2, effort_rounds=1, effort_targets=4,
                           square=SquareConfig(per_image=False))
REFERENCE = {"HaH": ROOT / "checkpoints" / "hah-vgg16-small.safetensors",
             "baseline": ROOT / "checkpoints" / "vgg16-small.safetensors"}
EPS = {"linf": 2 / 255, "l2": 0.25}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--norm", default="linf,l2")
    parser.add_argument("--models", default="HaH,baseline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = balanced_subset(load_cifar10(args.data, "test"), args.images, seed=0)
    models = {label: load_checkpoint(path)[0] for label, path in REFERENCE.items()}
    rows = []
    for label in args.models.split(","):
        source = models["baseline" if label == "HaH" else "HaH"]
        for norm in args.norm.split(","):
            result = {"model": label, "norm": norm, "eps": EPS[norm], "images": args.images}
            for edition, ensemble, config in (("first", FIRST_EDITION, FIRST_CONFIG), ("second", None, AuditConfig())):
                audited = audit_model(models[label], data, norm=norm, eps=[EPS[norm]], transfer_source=source,
                                      ensemble=ensemble, config=config)
                total = sum((c.total for c in audited.passes.values()), 0)
                result[f"{edition}_passes"] = total
                result[f"{edition}_worst"] = float(audited.worst[0].mean())
                result[f"{edition}_members"] = {k: v.total for k, v in audited.passes.items()}
            result["ratio"] = result["second_passes"] / result["first_passes"]
            rows.append(result)
            Console().print(f"{label} {norm}: first {result['first_passes']:,} passes (worst {result['first_worst']:.1%}), "
                            f"second {result['second_passes']:,} (worst {result['second_worst']:.1%}), "
                            f"ratio {result['ratio']:.2f}")
    first, second = sum(r["first_passes"] for r in rows), sum(r["second_passes"] for r in rows)
    table = Table(title=f"Audit passes, {args.images} images: second edition / first = {second / first:.2f}")
    for column in ("model", "norm", "first passes", "second passes", "ratio", "first worst", "second worst"):
        table.add_column(column, justify="left" if column in ("model", "norm") else "right")
    for r in rows:
        table.add_row(r["model"], r["norm"], f"{r['first_passes']:,}", f"{r['second_passes']:,}", f"{r['ratio']:.2f}",
                      f"{r['first_worst']:.1%}", f"{r['second_worst']:.1%}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "versions": versions(),
                                         "git_commit": git_commit(), "rows": rows, "ratio": second / first},
                                        indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
