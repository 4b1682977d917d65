"""podman as this machine runs it: the runc runtime (crun refuses its hybrid cgroups) and explicit ulimits
(the defaults are refused), the host's network so the container reaches the doubles on loopback."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

import attrs

PODMAN = ("podman", "--runtime", "runc")
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


@attrs.frozen
class Finished:
    code: int
    stdout: str
    stderr: str


@attrs.frozen
class Podman:
    image: str

    def run_argv(self, args: Sequence[str], *, options: Sequence[str] = ()) -> list[str]:
        return [*PODMAN, "run", "--rm", "--network", "host", *ULIMITS, *options, self.image, *args]

    def run(self, *args: str, options: Sequence[str] = (), timeout: float = 60) -> Finished:
        """Run the image's entrypoint with ``args`` (as Kubernetes ``args`` replace the image's CMD)."""
        done = subprocess.run(
            self.run_argv(args, options=options),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Finished(done.returncode, done.stdout, done.stderr)

    def shell(self, script: str, *, options: Sequence[str] = ()) -> Finished:
        """``script`` run by the image's own sh instead of the entrypoint."""
        return self.run("-c", script, options=["--entrypoint", "/bin/sh", *options])

    def inspect(self) -> dict[str, Any]:
        done = subprocess.run(
            [*PODMAN, "image", "inspect", self.image], capture_output=True, text=True, check=True
        )
        [found] = json.loads(done.stdout)
        return found  # type: ignore[no-any-return]

    def command(self, *args: str, timeout: float = 30) -> Finished:
        done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
        return Finished(done.returncode, done.stdout, done.stderr)
