"""Model references that cannot be loaded are reported within seconds, in one line
(#30 item 9): no folder of that name, not in the local Hugging Face cache, and the hub not
reachable; never a minute of download retries first."""

from __future__ import annotations

from pathlib import Path

import pytest

from o1pruner.errors import UserError
from o1pruner.models import hub_unreachable, resolve_model
from o1pruner.training.distributed import free_port

NO_PROXY = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def test_offline_a_missing_model_folder_is_one_line_naming_why(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./models here: `models/nope` has the shape of a hub id
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        resolve_model("models/nope")
    message = str(err.value)
    assert message.startswith("model.name_or_path: models/nope is not a folder here")
    assert "not a folder here" in message and "local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message and "\n" not in message


def test_an_unreachable_hub_is_found_by_a_quick_connection_check(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *NO_PROXY):
        monkeypatch.delenv(name, raising=False)
    port = free_port()  # nothing listens there: the connection is refused at once
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port} cannot be reached" in (hub_unreachable() or "")
    with pytest.raises(UserError, match=f"the hub cannot be reached \\(127.0.0.1:{port}"):
        resolve_model("org-that/does-not-exist")


def test_a_first_part_that_is_a_folder_here_makes_it_a_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(UserError, match="no such directory: models/nope"):
        resolve_model("models/nope")


def test_behind_a_proxy_the_hub_is_left_to_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub_unreachable() is None
