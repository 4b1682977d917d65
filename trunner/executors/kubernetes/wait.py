"""Wait for a job pod to be running: a LIST (by name) for the current state and the collection's
``resourceVersion``, then a watch (not a poll loop) that resumes where it left off when the server
ends the stream and lists again after ``410 Expired``, all within the pod wait limit. The list's
version, not the pod's own: a pod unchanged for longer than the API server keeps history has a
version a watch can no longer start from, and re-reading it would loop on 410.

While waiting, the job's log says what the pod waits for, once per change (as GitLab Runner
prints the pod's state and condition reasons). On timeout the outcome is ``pod_timeout`` and its
message names each container's waiting reason or the ``PodScheduled=False`` reason.
"""

from __future__ import annotations

import logging
import math

import trio

from trunner.contracts import OutputFeed
from trunner.executors.base import ExitKind, ExitResult
from trunner.executors.kubernetes.podstate import PodState, PodVerdict, evaluate
from trunner.kube.client import KubeClient
from trunner.kube.errors import Expired, KubeError
from trunner.kube.objects import ObjectError, PodObservation, PodObservationList, from_wire, lenient
from trunner.kube.watch import WatchEventType

logger = logging.getLogger("trunner.kube.wait")

WATCH_SECONDS = 300
"""Longest single watch request (``timeoutSeconds``); the server then ends it and we resume."""
_READ_SLACK = 30.0
_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


class _PodWatcher:
    def __init__(self, client: KubeClient, namespace: str, name: str, output: OutputFeed) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.output = output
        self.last: PodVerdict | None = None
        self.trouble: str | None = None
        """The API problem met since the watch last delivered, for the timeout message."""
        self.collection = f"/api/v1/namespaces/{namespace}/pods"
        self.version = ""
        """The newest ``resourceVersion`` seen, where a resumed watch starts."""
        self._announced: str | None = None
        self._failures = 0

    def observe(self, raw: object) -> PodVerdict:
        pod = from_wire(raw, PodObservation, where=f"pod {self.name}", converter=lenient)
        self.version = pod.metadata.resource_version or self.version
        return self._judge(pod)

    def _judge(self, pod: PodObservation) -> PodVerdict:
        verdict = evaluate(pod)
        self.last = verdict
        if verdict.state is PodState.WAITING and verdict.detail != self._announced:
            self._announced = verdict.detail
            self.output.note(f"Waiting for pod {self.namespace}/{self.name} to be running: {verdict.detail}")
        return verdict

    async def pause_after(self, problem: str) -> None:
        """Note an API problem and back off before trying again."""
        self.trouble = problem
        logger.warning("waiting for pod %s/%s: %s", self.namespace, self.name, problem)
        delay = _RETRY_DELAYS[min(self._failures, len(_RETRY_DELAYS) - 1)]
        self._failures += 1
        await trio.sleep(delay)

    async def until_settled(self, deadline: float) -> PodVerdict:
        """List, then watch (resuming; listing again after 410), until the pod is ready or failed."""
        while True:
            try:
                raw = await self.client.request(
                    "GET", self.collection, params={"fieldSelector": f"metadata.name={self.name}"}
                )
            except KubeError as exc:
                await self.pause_after(f"cannot read the pod: {exc}")
                continue
            listing = from_wire(raw, PodObservationList, where=f"pod list {self.name}", converter=lenient)
            if not listing.items:
                return PodVerdict(PodState.FAILED, "the pod disappeared before it was running")
            self.version = listing.metadata.resource_version
            verdict = self._judge(listing.items[0])
            if verdict.state is not PodState.WAITING:
                return verdict
            settled = await self._watch(deadline)
            if settled is not None:
                return settled

    async def _watch(self, deadline: float) -> PodVerdict | None:
        """Watch from the last version seen, resuming after each stream end; None: list again."""
        while True:
            remaining = max(1, math.ceil(deadline - trio.current_time()))
            seconds = min(WATCH_SECONDS, remaining)
            params: dict[str, str | int | bool] = {
                "fieldSelector": f"metadata.name={self.name}",
                "allowWatchBookmarks": True,
                "timeoutSeconds": seconds,
            }
            if self.version:
                params["resourceVersion"] = self.version
            delivered = False
            try:
                async with self.client.watch(
                    self.collection, params=params, read_timeout=seconds + _READ_SLACK
                ) as events:
                    async for event in events:
                        delivered = True
                        self.trouble = None
                        self._failures = 0
                        if event.type is WatchEventType.BOOKMARK:
                            self.version = event.resource_version or self.version
                            continue
                        if event.type is WatchEventType.DELETED:
                            return PodVerdict(PodState.FAILED, "the pod was deleted before it was running")
                        verdict = self.observe(event.object)
                        if verdict.state is not PodState.WAITING:
                            return verdict
            except Expired:
                return None
            except KubeError as exc:
                await self.pause_after(f"the pod watch failed: {exc}")
                return None
            if not delivered:
                # A stream that ends with nothing in it, again and again, must not spin.
                await trio.sleep(_RETRY_DELAYS[0])


async def wait_until_running(
    client: KubeClient, namespace: str, name: str, *, max_wait: float, output: OutputFeed
) -> ExitResult | None:
    """None once the pod is running; otherwise why the job cannot run in it (``pod_timeout``
    after ``max_wait`` seconds, or a failure as soon as the pod cannot start)."""
    watcher = _PodWatcher(client, namespace, name, output)
    deadline = trio.current_time() + max_wait
    with trio.move_on_at(deadline):
        try:
            verdict = await watcher.until_settled(deadline)
        except ObjectError as exc:
            return ExitResult(ExitKind.INFRASTRUCTURE, message=f"cannot read the status of pod {name}: {exc}")
        if verdict.state is PodState.READY:
            return None
        return ExitResult(
            ExitKind.COULD_NOT_START, verdict.exit_code, f"pod {name} could not start: {verdict.detail}"
        )
    why = watcher.last.detail if watcher.last else "the pod was never seen"
    if watcher.trouble:
        why += f" (and {watcher.trouble})"
    return ExitResult(
        ExitKind.POD_TIMEOUT, message=f"pod {name} was not running within {max_wait:g} s: {why}"
    )
