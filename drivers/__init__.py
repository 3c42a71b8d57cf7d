"""Serial instrument drivers and their emulators.

- base: the Driver interface (`driver.readings(transport, stop) -> Iterator[Reading]`), polling and push loops.
- reading / settings: the Reading and Counters dataclasses; pydantic settings with serial defaults.
- framing, checksums, units: pure helpers with their own tests.
- victoreen, diamentor, ludlum: documented instruments; profile + profile_driver: instruments described in TOML.
- registry.DRIVERS: name -> class, as config names them. emulators.EMULATORS: the same names -> emulators.
- ports: resolve a /dev/serial/by-id path or `usb:VID:PID[:SERIAL]` selector to a device.
"""
