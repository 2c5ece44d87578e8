"""Instance metadata (IMDSv2): the instance's id, and notice that it is going away.

EC2 gives a spot instance two minutes' notice of an interruption
(``spot/instance-action``), and an Auto Scaling group that ends an instance
with a termination lifecycle hook says so in
``autoscaling/target-lifecycle-state``. The watcher looks every few seconds
and tells the worker, which gives its bundles back well inside those two
minutes. The metadata URL is a setting so that tests and the local fleet can
serve a notice of their own.
"""

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from worker.errors import WorkerConfigError

log = logging.getLogger("taskfleet.worker")

#: Where EC2's instance metadata service answers.
DEFAULT_METADATA_URL = "http://169.254.169.254/latest"

#: Seconds between two looks for a notice.
WATCH_INTERVAL_SECONDS = 5.0

#: Seconds a metadata request may take.
METADATA_TIMEOUT_SECONDS = 2.0

#: Seconds an IMDSv2 session token is asked for (its maximum is six hours).
TOKEN_TTL_SECONDS = 21600


class Metadata:
    """A client of the instance metadata service (IMDSv2: a session token first)."""

    def __init__(self, url: str = DEFAULT_METADATA_URL) -> None:
        self.url = url.rstrip("/")
        self._token: str | None = None

    def get(self, path: str) -> str | None:
        """The text at ``meta-data/PATH``; None if there is none (404)."""
        for attempt in range(2):
            if self._token is None:
                self._token = self._new_token()
            request = urllib.request.Request(
                f"{self.url}/meta-data/{path}", headers={"X-aws-ec2-metadata-token": self._token}
            )
            try:
                with urllib.request.urlopen(request, timeout=METADATA_TIMEOUT_SECONDS) as answer:
                    return str(answer.read().decode())
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return None
                if error.code == 401 and attempt == 0:
                    self._token = None  # expired: ask for a new one
                    continue
                raise
        return None

    def _new_token(self) -> str:
        request = urllib.request.Request(
            f"{self.url}/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        with urllib.request.urlopen(request, timeout=METADATA_TIMEOUT_SECONDS) as answer:
            return str(answer.read().decode())

    def instance_id(self) -> str:
        try:
            found = self.get("instance-id")
        except OSError as error:
            raise WorkerConfigError(
                f"no instance id given and instance metadata did not answer ({error})"
            ) from error
        if not found:
            raise WorkerConfigError("no instance id given and instance metadata has none")
        return found


class Notice:
    """Why the instance is going away."""

    SPOT = "spot interruption notice"
    LIFECYCLE = "the Auto Scaling group is ending this instance"


class InterruptionWatcher(threading.Thread):
    """Looks for a spot interruption or a group's termination; calls ``on_notice`` once."""

    def __init__(self, metadata: Metadata, on_notice: Callable[[str], None]) -> None:
        super().__init__(name="taskfleet-interruptions", daemon=True)
        self.metadata = metadata
        self.on_notice = on_notice
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(WATCH_INTERVAL_SECONDS):
            notice = self.look()
            if notice is not None:
                self.on_notice(notice)
                return

    def look(self) -> str | None:
        """The notice in force now, if any (an unreachable service is none)."""
        try:
            if self.metadata.get("spot/instance-action") is not None:
                return Notice.SPOT
            if self.metadata.get("autoscaling/target-lifecycle-state") == "Terminated":
                return Notice.LIFECYCLE
        except OSError as error:
            log.debug("instance metadata did not answer: %s", error)
        return None
