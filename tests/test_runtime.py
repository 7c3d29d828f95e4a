"""The CLI's allocator tuning: applied once on glibc, and never where the user opted out or chose settings."""

import sys

import pytest

from influal.core import runtime


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", None)
    for name in ("INFLUAL_TUNE_ALLOCATOR", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuning_applies_once_on_linux(fresh):
    assert runtime.tune_allocator() is True
    assert runtime.allocator_tuned() and runtime.tune_allocator() is True


@pytest.mark.parametrize("env", [{"INFLUAL_TUNE_ALLOCATOR": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "131072"}])
def test_opt_out_and_users_own_settings_are_respected(fresh, env):
    for name, value in env.items():
        fresh.setenv(name, value)
    assert runtime.tune_allocator() is False and not runtime.allocator_tuned()
