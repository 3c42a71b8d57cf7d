"""Meta-test: every registered driver follows the conventions (pymeasure's 'test all instruments' idea)."""

from __future__ import annotations

import builtins
import inspect
import io
import os
import socket
import sys
from pathlib import Path

import pytest
import serial

from drivers.emulators import EMULATORS
from drivers.profile import load_profile
from drivers.reading import Counters
from drivers.registry import DRIVERS
from drivers.settings import SERIAL_FIELDS, DriverSettings

REPO = Path(__file__).resolve().parent.parent
# Drivers that cannot have default settings (the profile driver needs an instrument description).
EXAMPLE_SETTINGS = {"profile": lambda: load_profile(REPO / "config" / "profiles" / "ludlum_2363.toml")}


def _no_io(*args, **kwargs):
    raise AssertionError(f"I/O in a driver constructor: {args[:1]}")


def test_registry_and_emulators_have_the_same_names():
    assert set(DRIVERS) == set(EMULATORS)
    assert set(EXAMPLE_SETTINGS) <= set(DRIVERS)


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_settings_model_with_serial_defaults(name):
    cls = DRIVERS[name]
    assert cls.name == name
    assert issubclass(cls.Settings, DriverSettings)
    for field in SERIAL_FIELDS:
        assert not cls.Settings.model_fields[field].is_required(), f"{name}: {field} needs a default"
    if name not in EXAMPLE_SETTINGS:
        cls.Settings()  # every field has a default


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_constructor_does_no_io(name, monkeypatch):
    cls = DRIVERS[name]
    settings = EXAMPLE_SETTINGS[name]() if name in EXAMPLE_SETTINGS else cls.Settings()
    for target, attr in [(builtins, "open"), (io, "open"), (os, "open"), (socket, "socket"),
                         (serial.Serial, "open"), (serial, "serial_for_url")]:
        monkeypatch.setattr(target, attr, _no_io)
    driver = cls(settings)
    assert driver.counters == Counters()
    assert driver.settings is settings


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_documented_with_sources(name):
    cls = DRIVERS[name]
    assert cls.__doc__ and sys.modules[cls.__module__].__doc__
    for attr, member in inspect.getmembers(cls, inspect.isfunction):
        if not attr.startswith("_") and member.__module__.startswith("drivers"):
            assert member.__doc__, f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_has_emulator(name):
    emulator = EMULATORS[name]
    assert emulator.name == name
    for method in ("start", "stop", "unplug", "garbage"):
        assert callable(getattr(emulator, method))


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_has_byte_exact_protocol_tests(name):
    path = REPO / "tests" / f"test_drivers_{name}.py"
    assert path.exists(), f"{path.name} missing"
    text = path.read_text()
    assert "expected_protocol(" in text, f"{path.name} does not use expected_protocol"
    assert text.count("def test_") >= 3
