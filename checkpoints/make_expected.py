"""Regenerate checkpoints/expected/<command>.json by running the manifest's commands (see manifest.json).

    python checkpoints/make_expected.py --data ../shared/data/cifar10-jpeg.tar.gz

Run it only when a change is *meant* to move these numbers, and say why in the commit message.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from hahrobust.cli import app

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "checkpoints" / "expected"


def manifest_commands(data: str, out: Path) -> dict[str, list[str]]:
    manifest = json.loads((EXPECTED / "manifest.json").read_text(encoding="utf-8"))
    return {name: [a.format(data=data, out=out) for a in args] for name, args in manifest["commands"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CIFAR-10 archive or directory")
    parser.add_argument("--only", nargs="*", help="regenerate only these commands")
    args = parser.parse_args()
    for name in args.only or []:
        if name not in manifest_commands(args.data, Path()):
            parser.error(f"--only: {name!r} is not in the manifest")
    for name in manifest_commands(args.data, Path()):
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:  # one folder per command: two may share a file name
            command = manifest_commands(args.data, Path(tmp))[name]
            result = CliRunner().invoke(app, command, catch_exceptions=False)
            print(result.output)
            if result.exit_code != 0:
                return result.exit_code
            # The command (its first argument) names what it writes; the manifest's key names the expected file.
            shutil.copyfile(Path(tmp) / f"{command[0]}.json", EXPECTED / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
