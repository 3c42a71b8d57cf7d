"""Serial instrument drivers and their emulators."""
