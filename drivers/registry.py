"""The explicit name -> driver class table that config refers to (`driver = "ptw_diamentor"`)."""

from __future__ import annotations

from drivers.base import Driver
from drivers.diamentor import PtwDiamentor
from drivers.ludlum import Ludlum375
from drivers.profile_driver import ProfileDriver
from drivers.victoreen import Victoreen4000M

DRIVERS: dict[str, type[Driver]] = {
    Victoreen4000M.name: Victoreen4000M,
    PtwDiamentor.name: PtwDiamentor,
    Ludlum375.name: Ludlum375,
    ProfileDriver.name: ProfileDriver,
}
