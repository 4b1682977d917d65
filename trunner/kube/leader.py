"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's ``leaderelection`` rules.

A candidate takes the Lease when it is free (no holder) or when its record has not changed for
``leaseDurationSeconds`` as measured on the candidate's own clock from when the candidate first saw
that record (never from the timestamps in the record, so clock skew between nodes does not matter).
Every write carries the ``resourceVersion`` it read, so two candidates cannot both win: the second
write is refused with a conflict.

The leader renews every ``retry_period``. It counts itself leader only until ``renew_deadline`` after
the start of its last successful renewal; other candidates wait ``lease_duration`` (longer) after
they saw that renewal, so there is never a moment with two leaders while clocks run at the same
rate. When it cannot renew in time, or sees another holder, the leading work is cancelled at once.
On shutdown the leader releases the Lease (empty holder) so a successor need not wait.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NoReturn

import attrs
import trio

from trunner.kube.client import KubeClient
from trunner.kube.errors import AlreadyExists, Conflict, KubeError, NotFound
from trunner.kube.objects import ObjectError, from_wire, lenient, to_wire

log = logging.getLogger("trunner.leader")

RELEASE_TIMEOUT = 5.0


@attrs.frozen
class LeaseTimings:
    """client-go's LeaseDuration, RenewDeadline and RetryPeriod (the Go runner's 15/10/2 s)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("lease timings need lease_duration > renew_deadline > retry_period > 0")


@attrs.frozen
class LeaseSpec:
    holder_identity: str | None = None
    lease_duration_seconds: int | None = None
    acquire_time: str | None = None
    renew_time: str | None = None
    lease_transitions: int | None = None


@attrs.frozen
class LeaseMeta:
    name: str
    namespace: str | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class Lease:
    api_version: str = "coordination.k8s.io/v1"
    kind: str = "Lease"
    metadata: LeaseMeta
    spec: LeaseSpec = LeaseSpec()


def micro_time(moment: datetime) -> str:
    """A ``metav1.MicroTime`` as the API server writes it: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.frozen
class Observation:
    """A Lease record and when (on this process's trio clock) it was first seen."""

    lease: Lease
    seen_at: float


def _wall_now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """One candidate for the Lease ``namespace/name``. :meth:`campaign` runs until cancelled."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings | None = None,
        wall_clock: Callable[[], datetime] = _wall_now,
        rng: random.Random | None = None,
    ) -> None:
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._observed: Observation | None = None
        self._leading = False
        self._last_holder: str | None = None

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def _collection(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    @property
    def _path(self) -> str:
        return f"{self._collection}/{self.name}"

    async def campaign(self, lead: Callable[[], Awaitable[None]]) -> NoReturn:
        """Try to take the Lease; while holding it, run ``lead()``. ``lead`` is cancelled the moment
        the Lease is lost, and the campaign starts again. On cancellation the Lease is released."""
        try:
            while True:
                await self._acquire()
                await self._lead(lead)
        finally:
            if self._leading:
                self._leading = False
                with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
                    await self._release()

    async def _acquire(self) -> None:
        while True:
            if await self._attempt(self.timings.renew_deadline):
                return
            # client-go's JitterUntil(retryPeriod, 1.2): spread candidates that started together.
            await trio.sleep(self.timings.retry_period * (1 + 1.2 * self._rng.random()))

    async def _lead(self, lead: Callable[[], Awaitable[None]]) -> None:
        self._leading = True
        log.info("leading: holding lease %s/%s as %s", self.namespace, self.name, self.identity)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lead)
            await self._keep_renewing()
            nursery.cancel_scope.cancel()
        self._leading = False
        log.warning("lost lease %s/%s; leading work stopped", self.namespace, self.name)

    async def _keep_renewing(self) -> None:
        """Return as soon as this candidate can no longer count itself leader."""
        now = trio.current_time()
        valid_until = now + self.timings.renew_deadline
        next_try = now + self.timings.retry_period
        while True:
            await trio.sleep_until(min(next_try, valid_until))
            started = trio.current_time()
            if started >= valid_until:
                return
            if await self._attempt(valid_until - started):
                valid_until = started + self.timings.renew_deadline
            elif self._held_by_other():
                return
            next_try = started + self.timings.retry_period

    def _held_by_other(self) -> bool:
        holder = self._observed.lease.spec.holder_identity if self._observed else None
        return bool(holder) and holder != self.identity

    async def _attempt(self, limit: float) -> bool:
        """One read-and-write of the Lease within ``limit`` seconds; True if this candidate holds it."""
        with trio.move_on_after(limit):
            try:
                return await self._try_acquire_or_renew()
            except KubeError as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            except ObjectError as exc:
                log.error(
                    "lease %s/%s is not a Lease this runner can read: %s", self.namespace, self.name, exc
                )
        return False

    async def _try_acquire_or_renew(self) -> bool:
        now = self._wall_clock()
        try:
            raw = await self.kube.request("GET", self._path)
        except NotFound:
            return await self._create(now)
        current = from_wire(raw, Lease, where="lease", converter=lenient)
        self._observe(current)
        spec = current.spec
        holder = spec.holder_identity or ""
        if holder and holder != self.identity:
            assert self._observed is not None
            duration = spec.lease_duration_seconds or self.timings.lease_duration
            if self._observed.seen_at + duration > trio.current_time():
                return False
        ours = holder == self.identity
        wanted = attrs.evolve(
            current,
            spec=LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=round(self.timings.lease_duration),
                acquire_time=spec.acquire_time if ours else micro_time(now),
                renew_time=micro_time(now),
                lease_transitions=(spec.lease_transitions or 0) + (0 if ours else 1),
            ),
        )
        return await self._write("PUT", self._path, wanted)

    async def _create(self, now: datetime) -> bool:
        lease = Lease(
            metadata=LeaseMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=round(self.timings.lease_duration),
                acquire_time=micro_time(now),
                renew_time=micro_time(now),
                lease_transitions=0,
            ),
        )
        return await self._write("POST", self._collection, lease)

    async def _write(self, method: str, path: str, lease: Lease) -> bool:
        try:
            raw = await self.kube.request(method, path, json=to_wire(lease))
        except (Conflict, AlreadyExists):
            # Someone else wrote first; the next read shows what they wrote.
            return False
        self._observe(from_wire(raw, Lease, where="lease", converter=lenient))
        return True

    def _observe(self, lease: Lease) -> None:
        previous = self._observed
        if previous is None or previous.lease.spec != lease.spec:
            self._observed = Observation(lease, trio.current_time())
        else:
            self._observed = Observation(lease, previous.seen_at)
        holder = lease.spec.holder_identity or None
        if holder != self._last_holder:
            self._last_holder = holder
            if holder and holder != self.identity:
                log.info("lease %s/%s is held by %s", self.namespace, self.name, holder)

    async def _release(self) -> None:
        """Give the Lease up (empty holder, 1 s duration) if this candidate still holds it."""
        observed = self._observed
        if observed is None or observed.lease.spec.holder_identity != self.identity:
            return
        now = micro_time(self._wall_clock())
        released = attrs.evolve(
            observed.lease,
            spec=attrs.evolve(
                observed.lease.spec,
                holder_identity="",
                lease_duration_seconds=1,
                acquire_time=now,
                renew_time=now,
            ),
        )
        try:
            released_now = await self._write("PUT", self._path, released)
        except KubeError as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
            return
        if released_now:
            log.info("released lease %s/%s", self.namespace, self.name)
