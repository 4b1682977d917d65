"""The POSIX ``sh`` programs that run a job stage detached from any exec session and read its
output back by byte offset. They need only a POSIX shell and utilities every image with a shell
has (``mkdir``, ``wc``, ``dd``, ``sleep``, ``mv``, ``cat``): no helper binary in the job image.

A stage's directory lives on the pod's work-directory volume (an ``emptyDir``), which every exec
into the job container shares::

    <workdir>/.trunner/<job>/<stage>/
        stdout, stderr   the commands' output, append-only
        started/         made atomically (mkdir) by the one launch that runs the commands
        exit             "<code> <stdout bytes> <stderr bytes>", renamed into place once they ended
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from trunner.executors.script import job_directory_name

STATE_DIR = ".trunner"
NOT_STARTED = 3
"""The reader's exit status when the stage was never launched."""
READ_FAILED = 4
"""The reader's exit status when it cannot read the output files."""

# Launch: the output files exist before the marker, and the marker before the commands, so a
# reader that sees the marker can open both files; a second launch (a reconnect, a restarted
# runner) finds the marker and runs nothing. Ignoring SIGHUP covers an exec with a terminal; a
# non-interactive shell gives its background job no other signal when the session ends. The exit
# record is written after the commands' last byte, to a temporary file renamed into place.
LAUNCH = r"""set -u
d=$1
shift
mkdir -p "$d" && : >>"$d/stdout" && : >>"$d/stderr" || exit 70
mkdir "$d/started" 2>/dev/null || exit 0
trap '' HUP
(
  "$@" >>"$d/stdout" 2>>"$d/stderr"
  c=$?
  o=$(wc -c <"$d/stdout")
  e=$(wc -c <"$d/stderr")
  printf '%s %s %s\n' "$c" "${o##* }" "${e##* }" >"$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"
) </dev/null >/dev/null 2>&1 &
"""

# Read: copies each file's bytes from the caller's offset up to a size measured in this loop,
# stdout to stdout and stderr to stderr, and nothing else (diagnostics go to /dev/null, failures
# are exit statuses). dd's skip seeks; whole blocks are copied at 64 KiB, then 512, then single
# bytes, all through one shared file offset. The exit record is looked at before the sizes are
# measured, so once it is seen the sizes are final and the loop ends after copying them. After
# copying 64 KiB or more it looks again at once (a busy job is read as fast as it writes), else it
# sleeps: a quiet job costs a few processes per poll interval.
READ = r"""set -u
d=$1
o=$2
e=$3
p=$4
[ -d "$d/started" ] || exit 3
copy() {
  n=$(($3 - $2))
  [ "$n" -gt 0 ] || return 0
  { dd bs=1 skip="$2" count=0 && dd bs=65536 count=$((n / 65536)) &&
    dd bs=512 count=$((n % 65536 / 512)) && dd bs=1 count=$((n % 512)); } <"$1" 2>/dev/null
}
while :; do
  f=0
  [ -f "$d/exit" ] && f=1
  s=$(wc -c <"$d/stdout" 2>/dev/null) || exit 4
  t=$(wc -c <"$d/stderr" 2>/dev/null) || exit 4
  s=${s##* }
  t=${t##* }
  copy "$d/stdout" "$o" "$s" || exit 4
  copy "$d/stderr" "$e" "$t" >&2 || exit 4
  [ "$f" = 1 ] && exit 0
  n=$((s - o + t - e))
  o=$s
  e=$t
  [ "$n" -ge 65536 ] || sleep "$p"
done
"""

STATUS = r"""cat "$1/exit" 2>/dev/null || exit 3
"""


@attrs.frozen
class Stage:
    """One detached stage of a job in its pod: where its files are and how to run and read it."""

    shell: str
    directory: str

    def launch(self, argv: Sequence[str]) -> list[str]:
        """Runs ``argv`` detached, once: exits 0 when it was started now or before."""
        return [self.shell, "-c", LAUNCH, "trunner-launch", self.directory, *argv]

    def read(self, stdout_offset: int, stderr_offset: int, poll_seconds: int) -> list[str]:
        """Streams both files from the offsets until the exit record exists and all is sent;
        exits 0 then, :data:`NOT_STARTED` or :data:`READ_FAILED` otherwise."""
        if stdout_offset < 0 or stderr_offset < 0 or poll_seconds < 1:
            raise ValueError("offsets must be >= 0 and the poll interval >= 1 s")
        return [
            self.shell,
            "-c",
            READ,
            "trunner-read",
            self.directory,
            str(stdout_offset),
            str(stderr_offset),
            str(poll_seconds),
        ]

    def status(self) -> list[str]:
        """Prints the exit record, or exits :data:`NOT_STARTED` while there is none."""
        return [self.shell, "-c", STATUS, "trunner-status", self.directory]


def job_stage(shell: str, workdir: str, job_id: str, name: str = "main") -> Stage:
    return Stage(shell, f"{workdir.rstrip('/')}/{STATE_DIR}/{job_directory_name(job_id)}/{name}")
