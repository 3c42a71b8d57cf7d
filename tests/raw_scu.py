"""A C-STORE sender that sends files' bytes exactly as they are, even when the data set is broken.

storescu (and pynetdicom by default) parse an object before sending and refuse broken ones; a modality with a bug does
not. Run as a separate process so pynetdicom's global STORE_SEND_CHUNKED_DATASET switch never leaks into other tests:
    python -m tests.raw_scu PORT CALLED_AET CALLING_AET FILE...
    python -m tests.raw_scu PORT CALLED_AET CALLING_AET --list LISTFILE   (one path per line; for thousands of files)
Prints one line per file: "<path> <status>", where status is 0xNNNN, 'none' (the association ended while this object
was in flight: no status came back), 'unsent' (the association was already gone) or 'error:<Type>' (this sender could
not send the file, e.g. no presentation context for its meta); exit status 0 if the association was established.
All files go over one association, in order.
"""

from __future__ import annotations

import socket
import sys

from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset

MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts per association


def parse_args(argv: list[str]) -> tuple[int, str, str, list[str]]:
    port, called, calling, rest = int(argv[0]), argv[1], argv[2], argv[3:]
    if rest[:1] == ["--list"]:
        with open(rest[1]) as f:
            rest = [line.strip() for line in f if line.strip()]
    return port, called, calling, rest


def keep_responses(assoc) -> None:
    """Hand a response that pynetdicom's association thread took off the DIMSE queue back to send_c_store.

    send_c_store pauses that thread (the reactor) before sending and waiting, but its handshake is racy: it waits
    for `_is_paused`, which the reactor sets just before `_reactor_checkpoint.wait()` and clears just after it
    returns. When the reactor has just passed the checkpoint, send_c_store sees a stale True, sends, and a fast
    answer (a few ms on loopback) can be taken by the reactor, which logs "Received unexpected C-STORE service
    message" and drops it: send_c_store then waits out the DIMSE timeout (pydicom/pynetdicom#875). This sender
    never serves requests, so a response reaching the reactor always belongs to the request in flight."""
    serve = assoc._serve_request

    def serve_or_return(msg, context_id):
        if msg.is_valid_response:
            assoc.dimse.msg_queue.put((context_id, msg))
        else:
            serve(msg, context_id)

    assoc._serve_request = serve_or_return


def main(argv: list[str]) -> int:
    port, called, calling, files = parse_args(argv)
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's data set bytes without decoding them
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    metas = {path: split_dataset(path)[0] for path in files}
    contexts = sorted({(m.MediaStorageSOPClassUID, m.TransferSyntaxUID) for m in metas.values()})
    if len(contexts) > MAX_CONTEXTS:
        print(f"{len(contexts)} (SOP class, transfer syntax) pairs: more than {MAX_CONTEXTS} presentation contexts",
              file=sys.stderr)
        return 2
    for meta in contexts:
        ae.add_requested_context(*meta)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        print("association failed", file=sys.stderr)
        return 1
    keep_responses(assoc)
    # Without TCP_NODELAY the data PDU written right after the command PDU waits for the peer's delayed ACK (40 ms on
    # Linux) on every C-STORE; dcmtk's storescu behaves the same unless TCP_NODELAY=1 is in its environment.
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for path in files:
        if not assoc.is_established:
            print(path, "unsent", flush=True)
            continue
        try:
            status = assoc.send_c_store(path)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next file
            print(path, f"error:{type(exc).__name__}", flush=True)
            continue
        print(path, f"0x{status.Status:04X}" if status and "Status" in status else "none", flush=True)
    if assoc.is_established:
        assoc.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
