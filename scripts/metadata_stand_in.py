"""A stand-in for EC2's instance metadata service (IMDSv2), for machines with none.

It answers the worker's two calls: ``PUT /latest/api/token`` (a session
token) and ``GET /latest/meta-data/PATH`` (the text kept for PATH, else 404).
Answers live in files under a folder, one subfolder per instance, so that
another process can give an instance a notice by writing one::

    FOLDER/i-0abc/spot/instance-action              -> {"action": "terminate", ...}
    FOLDER/i-0abc/autoscaling/target-lifecycle-state -> Terminated

A worker of instance ``i-0abc`` is pointed at ``url_for("i-0abc")``
(``http://HOST:PORT/i-0abc/latest``); ``url`` (no instance in the path)
serves the subfolder ``_``. The local fleet and the tests use it; it listens
on loopback unless told.
"""

import http.server
import json
import threading
import time
from pathlib import Path

#: The subfolder answering for a URL without an instance in its path.
NO_INSTANCE = "_"

#: The parts of a metadata path that may be served: IMDS's own alphabet (":"
#: for instance tags, such as tags/instance/aws:autoscaling:groupName).
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def spot_notice(seconds_ahead: float = 120) -> str:
    """The text of a spot interruption notice, as EC2 words it."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_ahead))
    return json.dumps({"action": "terminate", "time": at})


class MetadataAnswers:
    """The answers, as files: what the stand-in serves and notices are written to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def answer(self, path: str, text: str, instance_id: str = NO_INSTANCE) -> None:
        """Serve ``text`` at ``meta-data/PATH`` for the instance."""
        target = self._file(instance_id, path)
        if target is None:
            raise ValueError(f"not a metadata path: {instance_id}/{path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        draft = target.with_name(f".{target.name}.draft")
        draft.write_text(text)
        draft.replace(target)  # a reader never sees half a notice

    def knows(self, instance_id: str) -> bool:
        """Whether the instance has an id here (a worker of the fleet ran for it)."""
        return self.lookup(f"/{instance_id}/latest/meta-data/instance-id") is not None

    def lookup(self, url_path: str) -> str | None:
        """The text for a request's path, or None."""
        instance_id, _, rest = url_path.lstrip("/").partition("/")
        if instance_id == "latest":
            instance_id, rest = NO_INSTANCE, url_path.lstrip("/")
        path = rest.removeprefix("latest/meta-data/")
        if path == rest:
            return None
        target = self._file(instance_id, path)
        if target is None or not target.is_file():
            return None
        return target.read_text()

    def _file(self, instance_id: str, path: str) -> Path | None:
        parts = [instance_id, *path.split("/")]
        if any(not part or part in {".", ".."} or not set(part) <= SAFE for part in parts):
            return None
        return self.folder.joinpath(*parts)


class MetadataStandIn(MetadataAnswers):
    """Instance metadata for many instances, served over HTTP from files."""

    def __init__(self, folder: Path, address: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        super().__init__(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # seconds a client may take to send its request

            def do_PUT(self) -> None:
                self._reply("token-of-the-stand-in")

            def do_GET(self) -> None:
                found = stand_in.lookup(self.path)
                if found is None:
                    self.send_error(404)
                else:
                    self._reply(found)

            def _reply(self, text: str) -> None:
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(address, Handler)
        host, port = self.server.server_address[:2]
        self._base = f"http://{host!s}:{port}"
        self.url = f"{self._base}/latest"

    def url_for(self, instance_id: str) -> str:
        """The metadata URL to give the worker of ``instance_id``."""
        return f"{self._base}/{instance_id}/latest"

    def __enter__(self) -> "MetadataStandIn":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
