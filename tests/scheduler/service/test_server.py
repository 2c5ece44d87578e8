"""The service's start: ``scheduler --open`` opens the dashboard in the user's
browser, or says that it could not."""

import os
import stat
import webbrowser
from pathlib import Path

import pytest

from scheduler.service.server import open_dashboard
from tests.conftest import StartScheduler, wait_for


@pytest.mark.e2e
def test_open_starts_the_users_browser_on_the_dashboard(
    scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    browser.chmod(stat.S_IRWXU)
    service = scheduler_service("--open", env={**os.environ, "BROWSER": str(browser)})
    wait_for(opened.exists)
    wait_for(lambda: opened.read_text() == service.url + "/")


def test_open_says_so_when_no_browser_can_be_started(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[str] = []

    def no_browser(url: str) -> bool:
        tried.append(url)
        return False

    monkeypatch.setattr(webbrowser, "open", no_browser)
    said: list[str] = []
    open_dashboard("http://127.0.0.1:8750/", said.append)
    assert tried == ["http://127.0.0.1:8750/"]
    assert said == [
        "--open: no web browser could be started here; open http://127.0.0.1:8750/ in one"
    ]
