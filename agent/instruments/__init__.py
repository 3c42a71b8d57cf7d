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
    from agent.instruments.reader import InstrumentReader  # imported here: pyserial only when instruments exist
    from agent.instruments.reporter import EquipmentReporter

    board = board if board is not None else EquipmentBoard()
    readers = [InstrumentReader(inst, sink) for inst in cfg.instruments]
    for reader in readers:
        board.add(reader.tracker)
    reporter = EquipmentReporter(board, sink, {inst.id: inst.status_every_s for inst in cfg.instruments})
    return [("equipment", reporter)] + [(f"instrument-{reader.inst.id}", reader) for reader in readers]
