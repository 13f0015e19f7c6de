"""``.. hahrobust-commands::``: the command reference, built from the same declarations as ``--help``.

sphinx-click cannot document this app: Typer ≥ 0.25 builds its commands on its own reduced copy of click, whose
options have no ``type`` (sphinx-click reads it for every option). This directive asks each command for what
``--help`` prints instead: its usage, help text and every visible parameter's help record (with its default).
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive


def command_section(name: str, panel: str, command: Any) -> nodes.section:
    from typer._click.core import Context

    ctx = Context(command, info_name=f"hahrobust {name}")
    section = nodes.section(ids=[nodes.make_id(f"hahrobust-{name}")])
    section += nodes.title(text=f"hahrobust {name}")
    section += nodes.paragraph(text=f"{command.help} ({panel})")
    section += nodes.literal_block(text=command.get_usage(ctx).strip())
    items = nodes.definition_list()
    for param in command.params:
        record = None if getattr(param, "hidden", False) else param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        term = nodes.term()
        term += nodes.literal(text=names)
        definition = nodes.definition()
        definition += nodes.paragraph(text=" ".join(text.split()))
        items += nodes.definition_list_item("", term, definition)
    section += items
    return section


class HahrobustCommands(Directive):
    """Every command of ``hahrobust.cli.COMMANDS``, in the order and panels of ``hahrobust --help``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from hahrobust.cli import COMMANDS, load

        return [command_section(name, entry.panel, load(name)) for name, entry in COMMANDS.items()]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("hahrobust-commands", HahrobustCommands)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
