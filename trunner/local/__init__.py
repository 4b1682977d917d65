"""Local mode: job files from a folder (or ``trunner test``), run and printed to the console."""
