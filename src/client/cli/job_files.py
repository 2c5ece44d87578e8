"""``run``'s and ``submit``'s files: inputs (``--upload``) and where outputs go
(``--output-dir``).

Both are checked before anything runs, each refusal one line naming the
option, the path and the reason (exit 2).
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from client.cli.app import fail

if TYPE_CHECKING:
    from worker.inputs import InputFile

#: worker.inputs' defaults, written out so that the CLI starts without importing it.
DEFAULT_UPLOAD_MAX_BYTES = 10 * 1024**3
DEFAULT_UPLOAD_MAX_FILES = 10_000

Uploads = Annotated[
    list[str] | None,
    typer.Option(
        "--upload",
        metavar="PATH",
        help="A file or directory each task sees, read-only, in its working directory"
        " (under its own name); repeatable.",
        show_default=False,
    ),
]
UploadMaxBytes = Annotated[
    int,
    typer.Option(
        metavar="BYTES",
        min=0,
        help="Refuse uploads larger than this in all.",
        envvar="TASKFLEET_UPLOAD_MAX_BYTES",
    ),
]
UploadMaxFiles = Annotated[
    int,
    typer.Option(
        metavar="N",
        min=0,
        help="Refuse uploads of more files than this in all.",
        envvar="TASKFLEET_UPLOAD_MAX_FILES",
    ),
]
OutputDir = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="Bring back the files each task that succeeds leaves in its working"
        " directory, under DIR/<file>-<line>/.",
    ),
]

KeepFiles = Annotated[
    bool,
    typer.Option(
        "--keep-files",
        help="Keep each task's files where the job runs for its retention (run --remote: the"
        " stack's bucket; submit: the scheduler's folder), to fetch with `taskfleet results"
        " JOB --files DIR` (--output-dir keeps them too).",
    ),
]


def checked_uploads(paths: list[str], max_bytes: int, max_files: int) -> "list[InputFile]":
    """The files of the uploads, or exit 2 naming the first that cannot go."""
    if not paths:
        return []
    from worker.errors import InputError
    from worker.inputs import check_uploads

    try:
        return check_uploads(paths, max_bytes, max_files)
    except InputError as error:
        raise fail(str(error)) from error


def checked_output_dir(
    output_dir: Path | None,
    files: list[str],
    resume: bool | None,
    option: str = "--output-dir",
) -> None:
    """Exit 2 if tasks' files could not go to ``output_dir`` unmixed: it is not a
    directory, or holds files of another run (unless ``resume``-ing that run;
    None: the command cannot resume), or two workload files share a name (their
    tasks' directories would too)."""
    if output_dir is None:
        return
    if output_dir.exists() and not output_dir.is_dir():
        raise fail(f"{option} {output_dir}: not a directory")
    if output_dir.exists() and not resume and any(output_dir.iterdir()):
        or_resume = "" if resume is None else ", or --resume that run"
        raise fail(
            f"{option} {output_dir}: not empty (another run's files would mix with"
            f" this one's; give an empty one{or_resume})"
        )
    checked_names(files, option)


def checked_names(files: list[str], option: str) -> None:
    """Exit 2 if two workload files share a base name: their tasks' folders would."""
    names: set[str] = set()
    for file in files:
        name = Path(file).name
        if name in names:
            raise fail(f"{option}: two workload files named {name!r} would share its folders")
        names.add(name)
