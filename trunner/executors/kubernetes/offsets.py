"""How far the runner has read a detached stage's output files, and the stage's exit record.

An offset counts the bytes of one stream that were handed to the job log. Reading resumes there,
so a reconnect neither repeats nor skips a byte; the stage is read completely when its exit
record exists and both offsets have reached the file sizes the record names.
"""

from __future__ import annotations

import attrs

from trunner.contracts import Stream

MAX_EXIT_RECORD = 64
"""Bytes an exit record may take: three decimal numbers and separators."""


class ExitRecordError(ValueError):
    """The exit record is not ``<code> <stdout bytes> <stderr bytes>``."""


@attrs.frozen
class ExitRecord:
    """Written by the stage's wrapper once the commands ended: their exit code and the final
    sizes of the stdout and stderr files."""

    code: int
    stdout_size: int
    stderr_size: int


def parse_exit_record(data: bytes) -> ExitRecord:
    if len(data) > MAX_EXIT_RECORD:
        raise ExitRecordError(
            f"the exit record is longer than {MAX_EXIT_RECORD} bytes: {data[:MAX_EXIT_RECORD]!r}"
        )
    fields = data.split()
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise ExitRecordError(f"the exit record is not '<code> <stdout bytes> <stderr bytes>': {data!r}")
    code, stdout_size, stderr_size = (int(f) for f in fields)
    if code > 255:
        raise ExitRecordError(f"the exit record's code {code} is not an exit status (0-255)")
    return ExitRecord(code, stdout_size, stderr_size)


@attrs.define
class StreamOffsets:
    stdout: int = 0
    stderr: int = 0

    def advance(self, stream: Stream, count: int) -> None:
        if stream is Stream.STDOUT:
            self.stdout += count
        else:
            self.stderr += count

    def behind(self, record: ExitRecord) -> bool:
        """Bytes remain to be read up to the sizes in ``record``."""
        return self.stdout < record.stdout_size or self.stderr < record.stderr_size

    def beyond(self, record: ExitRecord) -> bool:
        """More was read than the files hold: they were changed behind the runner's back."""
        return self.stdout > record.stdout_size or self.stderr > record.stderr_size
