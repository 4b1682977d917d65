"""An executor that interprets a job's commands as a tiny script, with virtual-time sleeps:

say <text>            one stdout line
err <text>            one stderr line
print <n> <text>      n stdout lines "<text> <i>", i = 1..n, fed in chunks of 100 lines
sleep <seconds>
hang                  wait until cancelled
exit <code>
"""

from __future__ import annotations

import trio

from tests.doubles.executors import TracksRuns
from trunner.contracts import OutputFeed, Stream
from trunner.executors.base import ExitResult
from trunner.models import RunnerJob

CHUNK_LINES = 100


class CommandExecutor(TracksRuns):
    name = "commands"

    def __init__(self, *, chunk_pause: float = 0.01) -> None:
        super().__init__()
        self.chunk_pause = chunk_pause

    def check_job(self, job: RunnerJob) -> list[str]:
        return [] if job.commands else ["commands: at least one command is required"]

    async def run(self, job: RunnerJob, output: OutputFeed) -> ExitResult:
        with self.tracking(job):
            for command in job.commands:
                verb, _, rest = command.partition(" ")
                if verb == "say":
                    output.feed(Stream.STDOUT, rest.encode() + b"\n")
                    await output.wait_for_room()
                elif verb == "err":
                    output.feed(Stream.STDERR, rest.encode() + b"\n")
                    await output.wait_for_room()
                elif verb == "print":
                    count, _, text = rest.partition(" ")
                    for start in range(1, int(count) + 1, CHUNK_LINES):
                        stop = min(int(count) + 1, start + CHUNK_LINES)
                        output.feed(
                            Stream.STDOUT, b"".join(f"{text} {i}\n".encode() for i in range(start, stop))
                        )
                        await output.wait_for_room()
                        await trio.sleep(self.chunk_pause)
                elif verb == "sleep":
                    await trio.sleep(float(rest))
                elif verb == "hang":
                    await trio.sleep_forever()
                elif verb == "exit":
                    return ExitResult.exited(int(rest))
                else:
                    return ExitResult.exited(127)
            return ExitResult.exited(0)
