"""A missing program skips its tests with the package to install, or fails them in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.programs import CHROMIUM, NGINX, REDIS, Program, require

ABSENT = Program(name="latchkey-absent-server", debian="latchkey-absent", macos="latchkey-absent")


def test_a_missing_program_skips_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LATCHKEY_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require(ABSENT)
    message = str(skipped.value)
    assert "latchkey-absent-server not found" in message
    assert "apt-get install latchkey-absent" in message
    assert "brew install latchkey-absent" in message


@pytest.mark.parametrize("value", ["1", "true"])
def test_require_all_turns_the_skip_into_a_failure(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LATCHKEY_REQUIRE_ALL", value)
    with pytest.raises(pytest.fail.Exception) as failed:
        require(ABSENT)
    assert "apt-get install latchkey-absent" in str(failed.value)
    assert "LATCHKEY_REQUIRE_ALL=1" in str(failed.value)


def test_a_program_on_the_path_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "latchkey-absent-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert require(ABSENT) == str(binary)


def test_chromium_path_names_the_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "nowhere" / "chromium"))
    monkeypatch.delenv("LATCHKEY_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require(CHROMIUM)
    assert "apt-get install chromium" in str(skipped.value)


def test_each_server_names_its_debian_package() -> None:
    assert "apt-get install redis-server" in REDIS.reason
    assert "apt-get install chromium" in CHROMIUM.reason
    assert "apt-get install nginx-light" in NGINX.reason
