"""The documentation names what the code has, so the two cannot drift apart:
every option of every ``taskfleet`` command (and its environment variable) in
that command's section of docs/commands.md, and every setting the CDK app reads
and every output the stack makes in docs/stack.md. The lists come from the code:
the typer app's commands, cdk/app.py's source (read, not imported: the fast
tier does not load the CDK) and worker/contracts.py."""

import ast
import re
from pathlib import Path

import typer.main

from client.cli import app
from worker.contracts import Output

ROOT = Path(__file__).resolve().parent.parent
COMMANDS_DOC = ROOT / "docs" / "commands.md"
STACK_DOC = ROOT / "docs" / "stack.md"
CDK_APP = ROOT / "cdk" / "app.py"

#: A stack setting's context key, as cdk/app.py spells it.
SETTING_KEY = re.compile(r"taskfleet:[A-Za-z]+")


def command_sections(text: str) -> dict[str, str]:
    """The body of each "## `taskfleet NAME`" section (its ### parts included), by NAME."""
    sections = {}
    for part in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        match = re.fullmatch(r"`taskfleet ([a-z-]+)`", heading.strip())
        if match:
            sections[match[1]] = body
    return sections


def command_names() -> dict[str, list[str]]:
    """Each command's option names (long and short) and environment variables."""
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    names: dict[str, list[str]] = {}
    for name, command in root.commands.items():
        found = names.setdefault(name, [])
        for param in command.params:
            if param.param_type_name != "option":
                continue
            found.extend(param.opts + param.secondary_opts)
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            found.extend(envvars)
    return names


def mentions(text: str, name: str) -> bool:
    """Whether ``name`` stands in ``text`` as a word of its own (not --x in --x-y)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def undocumented(sections: dict[str, str], commands: dict[str, list[str]]) -> list[str]:
    """ "COMMAND NAME" for every option or variable missing from its command's section."""
    missing = []
    for command, names in commands.items():
        section = sections.get(command)
        if section is None:
            missing.append(f"{command} (no '## `taskfleet {command}`' section)")
            continue
        missing.extend(f"{command} {name}" for name in names if not mentions(section, name))
    return missing


def stack_setting_keys() -> set[str]:
    """The context keys cdk/app.py reads: every ``taskfleet:*`` string in it (its
    DEFAULTS table's keys, and any key read outside the table)."""
    tree = ast.parse(CDK_APP.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and SETTING_KEY.fullmatch(node.value)
    }


def test_every_option_of_every_command_is_in_its_section_of_the_command_reference() -> None:
    commands = command_names()
    assert {"run", "scheduler", "submit", "worker"} <= commands.keys()
    sections = command_sections(COMMANDS_DOC.read_text(encoding="utf-8"))
    assert undocumented(sections, commands) == [], "add them to docs/commands.md"


def test_an_option_missing_from_its_section_is_found() -> None:
    sections = {"run": "`-w`, `--workers N` (`TASKFLEET_WORKERS`); `--resume-all`"}
    commands = {"run": ["--workers", "-w", "TASKFLEET_WORKERS", "--resume"], "new": ["--x"]}
    assert undocumented(sections, commands) == [
        "run --resume",
        "new (no '## `taskfleet new`' section)",
    ]


def test_sections_are_cut_at_each_command_heading() -> None:
    text = "# Commands\n## `taskfleet run`\n`--a`\n### more\n`--b`\n## Records\n`--c`\n"
    assert command_sections(text) == {"run": "`--a`\n### more\n`--b`\n"}


def test_every_stack_setting_is_in_the_stack_page() -> None:
    keys = stack_setting_keys()
    assert {"taskfleet:maxWorkers", "taskfleet:slotsPerInstance"} <= keys
    page = STACK_DOC.read_text(encoding="utf-8")
    missing = sorted(key for key in keys if f"`{key}`" not in page)
    assert missing == [], "add them to the settings table of docs/stack.md"


def test_every_stack_output_is_in_the_stack_page() -> None:
    outputs = [value for name, value in vars(Output).items() if name.isupper()]
    assert "InstanceTypes" in outputs
    page = STACK_DOC.read_text(encoding="utf-8")
    missing = [name for name in outputs if f"`{name}`" not in page]
    assert missing == [], "add them to the outputs of docs/stack.md"
