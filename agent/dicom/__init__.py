"""DICOM intake, pure extraction layer: image headers and Radiation Dose SRs -> exposure payloads.

`extract(ds, ctx)` is the entry point (extract.py); units.py holds the explicit unit conversions, image.py and rdsr.py
the readers of each kind of object. Nothing here does I/O. Before extraction, every intake path reads the received
bytes through reading.py, which refuses an object cut part-way (completeness.py).
"""

from agent.dicom.extract import ExtractContext, Extraction, ExtractionError, extract

__all__ = ["ExtractContext", "Extraction", "ExtractionError", "extract"]
