"""A C-STORE sender that sends files' bytes exactly as they are, even when the data set is broken.

storescu (and pynetdicom by default) parse an object before sending and refuse broken ones; a modality with a bug does
not. Run as a separate process so pynetdicom's global STORE_SEND_CHUNKED_DATASET switch never leaks into other tests:
    python -m tests.raw_scu PORT CALLED_AET CALLING_AET FILE...
Prints one line per file: "<path> <status as 0xNNNN or 'none'>"; exit status 0 if the association was established.
"""

from __future__ import annotations

import sys

from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset


def main(argv: list[str]) -> int:
    port, called, calling, files = int(argv[0]), argv[1], argv[2], argv[3:]
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's data set bytes without decoding them
    ae = AE(ae_title=calling)
    metas = {path: split_dataset(path)[0] for path in files}
    for meta in {(m.MediaStorageSOPClassUID, m.TransferSyntaxUID) for m in metas.values()}:
        ae.add_requested_context(*meta)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        print("association failed", file=sys.stderr)
        return 1
    for path in files:
        status = assoc.send_c_store(path)
        print(path, f"0x{status.Status:04X}" if status and "Status" in status else "none", flush=True)
    assoc.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
