"""The copies of the contracts that live outside Python agree with worker.contracts."""

import re
from pathlib import Path

import typer

from client.cli.app import app
from worker.contracts import BOOTSTRAP_SETTINGS, WORKER_ENV_SETTINGS, Setting

BOOTSTRAP = Path(__file__).parents[2] / "image" / "bootstrap.sh"


def test_bootstrap_documents_and_requires_what_the_stack_hands_it() -> None:
    text = BOOTSTRAP.read_text()
    documented = re.findall(r"^#\s+(TASKFLEET_\w+)\s", text, flags=re.MULTILINE)
    required = re.findall(r'"\$\{(TASKFLEET_\w+):\?\}"', text)
    assert documented == list(BOOTSTRAP_SETTINGS)
    assert sorted(required) == sorted(BOOTSTRAP_SETTINGS)


def test_bootstrap_writes_every_setting_the_worker_unit_needs() -> None:
    text = BOOTSTRAP.read_text()
    env_file = text.split("<<CONFIG\n", 1)[1].split("\nCONFIG\n", 1)[0]
    written = [line.split("=", 1)[0] for line in env_file.splitlines()]
    assert written == list(WORKER_ENV_SETTINGS)


def test_every_worker_option_reads_its_setting() -> None:
    worker = typer.main.get_command(app).commands["worker"]  # type: ignore[attr-defined]
    read = {param.envvar for param in worker.params if param.envvar}
    settings = {value for name, value in vars(Setting).items() if name.isupper()}
    assert read == settings - {Setting.SOURCE_URL}  # the source is bootstrap's alone
