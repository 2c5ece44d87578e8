"""The ``taskfleet`` command: thin typer commands that hand off to the library.

One module a group of commands (``local``: run; ``service``: scheduler,
submit, results, status, cancel; ``fleet_jobs``: wait, jobs and the
``--stack`` side of results, status, cancel; ``worker``; ``bench``), all on the one typer
app of ``app``. Each command imports what it uses when it runs, so that
`taskfleet run` never loads boto3, Starlette, uvicorn or matplotlib.
"""

from client.cli import bench, fleet_jobs, local, service, worker  # noqa: F401 - registers the commands
from client.cli.app import app, main

__all__ = ["app", "main"]
