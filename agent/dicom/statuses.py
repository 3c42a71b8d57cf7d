"""DIMSE status codes the agent answers with (PS3.4 Annex B.2.3 for C-STORE, PS3.7 C.4.2 for C-ECHO)."""

SUCCESS = 0x0000
# A7xx "Refused: Out of Resources": the sender keeps the object and retries later. Used when the outbox is full or
# cannot be written, so nothing is acknowledged that is not safely stored.
OUT_OF_RESOURCES = 0xA700
# A9xx "Error: Data Set does not match SOP Class".
DATASET_MISMATCH = 0xA900
# Cxxx "Error: Cannot understand": the object cannot be parsed, or it is incomplete (cut part-way: completeness.py).
# Retrying the same bytes would not help, so the sender may give up on them; the agent keeps a copy in the quarantine
# folder and remembers nothing of it, so a complete re-send is accepted.
CANNOT_UNDERSTAND = 0xC000

NAMES = {SUCCESS: "Success", OUT_OF_RESOURCES: "Refused: Out of Resources",
         DATASET_MISMATCH: "Error: Data Set does not match SOP Class", CANNOT_UNDERSTAND: "Error: Cannot understand"}
