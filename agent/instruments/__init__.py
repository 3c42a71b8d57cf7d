"""Serial instrument intake: runs the configured drivers on their ports and stores every reading durably.

`instrument_services(cfg, sink)` gives the supervisor one reader per `[[instruments]]` entry plus the equipment
reporter. The live state of every instrument is on the reporter's `board` (an EquipmentBoard), for the web page and
health endpoints; pass your own board to share it.
"""

from __future__ import annotations

from agent.instruments.status import EquipmentBoard


def instrument_services(cfg, sink, board: EquipmentBoard | None = None) -> list[tuple[str, object]]:
    """(name, service) pairs in start order: the reporter first, so it stops last and publishes the final states."""
    if not cfg.instruments:
        return []
    from agent.instruments.reporter import EquipmentReporter

    board = board if board is not None else EquipmentBoard()
    readers = instrument_readers(cfg, sink, board)
    reporter = EquipmentReporter(board, sink, status_periods(cfg))
    return [("equipment", reporter)] + readers


def instrument_readers(cfg, sink, board: EquipmentBoard) -> list[tuple[str, object]]:
    """(name, reader) pairs only, their trackers added to `board`: for an agent whose own equipment reporter (started
    before every intake) publishes the board."""
    from agent.instruments.reader import InstrumentReader  # imported here: pyserial only when instruments exist

    readers = [InstrumentReader(inst, sink) for inst in cfg.instruments]
    for reader in readers:
        board.add(reader.tracker)
    return [(f"instrument-{reader.inst.id}", reader) for reader in readers]


def status_periods(cfg) -> dict[str, float]:
    """Device id -> periodic re-publish interval of each instrument's equipment state, s."""
    return {inst.id: inst.status_every_s for inst in cfg.instruments}
