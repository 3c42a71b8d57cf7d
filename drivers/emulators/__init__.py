"""Emulators, one per driver, speaking the instrument's bytes over a pseudo-terminal (see base.Emulator)."""

from __future__ import annotations

from drivers.emulators.base import Emulator, Faults
from drivers.emulators.diamentor import DiamentorEmulator
from drivers.emulators.ludlum import Ludlum375Emulator
from drivers.emulators.profile import ProfileEmulator
from drivers.emulators.victoreen import VictoreenEmulator

EMULATORS: dict[str, type[Emulator]] = {
    VictoreenEmulator.name: VictoreenEmulator,
    DiamentorEmulator.name: DiamentorEmulator,
    Ludlum375Emulator.name: Ludlum375Emulator,
    ProfileEmulator.name: ProfileEmulator,
}

__all__ = ["EMULATORS", "Emulator", "Faults"]
