"""A Kubernetes API server double: trio, loopback, real HTTP/1.1 (h11) and WebSocket (wsproto)
on one port, as the apiserver serves them (k8s_exec.md sections 1-8).

* REST for any namespaced resource, core (``/api/v1/namespaces/{ns}/{plural}``) or grouped
  (``/apis/{group}/{version}/namespaces/{ns}/{plural}``): create (201), get, list (label and
  field selectors, limit/continue), replace (resourceVersion conflicts), merge patch, delete
  (pods: 200 with the pod; others: a Status), deletecollection, the ``status`` subresource, the
  ``scale`` subresource of Deployments, ReplicaSets and StatefulSets (an autoscaling/v1 Scale: get,
  replace with resourceVersion conflicts, merge patch; it changes only ``spec.replicas``).
  Errors are full ``metav1.Status`` bodies. Every request is recorded.
* Watch (``?watch=1``): chunked JSON lines from a resourceVersion, bookmarks on request, ERROR
  410 Expired for a compacted resourceVersion, ``timeoutSeconds``.
* Garbage collection: an object whose owners (``ownerReferences``, matched by uid) are all gone
  is deleted, when the owner is deleted or when the reference is set to an owner that is gone.
* Pods live: a created pod is scheduled and becomes Running after a (virtual-time) delay, or
  stays Pending with a waiting reason, unschedulable, or ends Failed/Succeeded, per
  :class:`PodBehaviour`. Deleting a running pod kills its exec processes.
* Exec over WebSocket (``kube_exec``): the argv as a local subprocess with the container's env,
  or a script of steps injecting faults. As on a kubelet, a process outlives an exec session that
  is cut (``cut_exec``) or closed, and every exec into a pod sees the same files (the pod's volumes
  are host directories the test chooses, e.g. the job work directory); deleting the pod, or the
  double's end, kills what its execs left running. Subprotocols as the translator (``v5``) or a legacy
  kubelet (``v4``) choose them; 403 with an empty body on no match, as x/net sends it.
* Faults on REST: a status with a Status body, the apiserver's plain-text 429 with
  ``Retry-After``, a dropped connection, a delay. Auth: bearer tokens and/or TLS client certs.

Time: lifecycle delays, pauses and watch timeouts use trio's clock, so they run under
``autojump_clock``. Exec subprocesses take real time; tests using them run on the real clock.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import functools
import math
import os
import re
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import trio
import yaml
from wsproto.connection import Connection, ConnectionType
from wsproto.utilities import generate_accept_token

from tests.doubles import kube_exec
from tests.doubles.http11 import serve_requests
from tests.doubles.kube_exec import (
    ExecPlan,
    ExecRequest,
    ExecSession,
    ExecStep,
    Script,
    Subprocess,
    WsPeer,
    internal_error_status,
)
from tests.doubles.kube_store import (
    WITH_SCALE_SUBRESOURCE,
    ApiFailure,
    Obj,
    ResourcePath,
    Store,
    StoredEvent,
    bad_request,
    decode_secret_value,
    delete_status,
    field_matcher,
    go_json,
    label_matcher,
    list_body,
    merge_patch,
    now_rfc3339,
    page,
    parse_path,
    unauthorized,
)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
TOO_MANY_REQUESTS_TEXT = b"Too many requests, please try again later.\n"
WATCH_BUFFER = 1000


@attrs.frozen
class RecordedRequest:
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    """Lower-case names, in order, repeated headers kept."""
    body: bytes
    client_cert: bool
    """A client certificate was presented and verified."""
    at: float = 0.0
    """trio.current_time() when the request was read."""

    def params(self, key: str) -> list[str]:
        return [value for name, value in self.query if name == key]

    def param(self, key: str) -> str | None:
        values = self.params(key)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name.lower()), None)

    def header_lines(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@attrs.define
class RestFault:
    """Applied to the next ``times`` requests that ``match``."""

    match: Callable[[RecordedRequest], bool]
    times: int
    status_code: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    drop: bool = False
    delay: float = 0.0


@attrs.frozen
class PodBehaviour:
    """What the scheduler and kubelet do with a created pod (times in trio seconds)."""

    schedule_delay: float = 0.0
    start_delay: float = 0.0
    """From scheduled to Running (containers wait in ContainerCreating/PodInitializing)."""
    unschedulable: str | None = None
    """Never scheduled: PodScheduled=False, reason Unschedulable, this message."""
    waiting: tuple[str, str] | None = None
    """Stuck Pending after scheduling with every container waiting for (reason, message)."""
    final_phase: str | None = None
    """``Failed`` or ``Succeeded`` after ``start_delay`` instead of Running."""
    final_reason: str = ""
    final_message: str = ""
    exit_code: int = 1


def matching(method: str | None = None, path: str | None = None) -> Callable[[RecordedRequest], bool]:
    """A request filter: ``method`` exactly, ``path`` as a regular expression searched in the path."""
    pattern = re.compile(path) if path else None

    def match(request: RecordedRequest) -> bool:
        return (method is None or request.method == method) and (
            pattern is None or pattern.search(request.path) is not None
        )

    return match


def _parse_bool(values: list[str]) -> bool:
    """Go's ``Convert_Slice_string_To_bool``: missing, ``false`` or ``0`` is false; else true."""
    if not values:
        return False
    return values[0].lower() not in ("false", "0")


class _Watch:
    def __init__(self, where: ResourcePath, labels: str, fields: str, bookmarks: bool) -> None:
        self.where = where
        self.match_labels = label_matcher(labels) if labels else (lambda _: True)
        self.match_fields = field_matcher(fields) if fields else (lambda _: True)
        self.bookmarks = bookmarks
        self.send, self.receive = trio.open_memory_channel[tuple[str, Obj] | None](WATCH_BUFFER)

    def matches(self, obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return bool(self.match_labels(labels) and self.match_fields(obj))

    def offer(self, event: StoredEvent) -> None:
        if event.collection != self.where.collection or not self.matches(event.object):
            return
        try:
            self.send.send_nowait((event.type, event.object))
        except trio.WouldBlock:
            # The apiserver drops a watcher that cannot keep up; the client must re-watch.
            self.send.close()
        except trio.ClosedResourceError:
            pass


class KubeApiDouble:
    """The double's state and knobs. Start it with :func:`serve_kube_api`."""

    def __init__(self, *, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.port = 0
        self.store = Store()
        self.requests: list[RecordedRequest] = []
        self.exec_sessions: list[ExecSession] = []
        self.faults: list[RestFault] = []
        self.tokens: set[str] | None = None
        """Accepted bearer tokens; None accepts any request (unless client_cert_auth)."""
        self.client_cert_auth = False
        """A verified client certificate authenticates the request."""
        self.translator = True
        """Path A: ``v5.channel.k8s.io`` is served when offered."""
        self.legacy_protocols: tuple[str, ...] = (V4,)
        """Path B: what the kubelet's streaming server accepts (first offered one wins)."""
        self.force_subprotocol: str | None = None
        """A misbehaving server: answer 101 with this subprotocol ("" for none) whatever was offered."""
        self.pod_behaviour: PodBehaviour | Callable[[Obj], PodBehaviour] = PodBehaviour()
        self.pod_termination_delay = 0.0
        """Seconds a deleted running pod stays (with deletionTimestamp) before it is gone."""
        self.exec_plan: Callable[[ExecRequest], ExecPlan] | None = None
        self.exec_scripts: deque[tuple[ExecStep, ...]] = deque()
        self.exec_cwd: str | None = None
        self.exec_cuts: kube_exec.CutBudget | None = None
        self.role_rules: list[Obj] | None = None
        """RBAC: the ``rules`` of the one Role bound to the client (apiGroups, resources, verbs) as an
        allow-list; None allows everything. A request no rule allows gets the apiserver's 403."""
        self.service_account = "system:serviceaccount:default:opslevel-runner"
        self.garbage_collection = True
        """Objects whose owners (``ownerReferences``) are all gone are deleted, as the garbage
        collector does; immediately here, within a moment in a cluster."""
        self._watches: list[_Watch] = []
        self._nursery: trio.Nursery | None = None
        self.store.listeners.append(self._fan_out)

    # --- addresses and client configuration -----------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self,
        path: Path,
        *,
        namespace: str = "default",
        user: dict[str, Any] | None = None,
        cluster: dict[str, Any] | None = None,
        server: str | None = None,
    ) -> Path:
        """A kubeconfig with one context ``double`` pointing at this server."""
        cluster_entry: dict[str, Any] = {"server": server or self.url}
        cluster_entry.update(cluster or {})
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "double",
            "clusters": [{"name": "double", "cluster": cluster_entry}],
            "users": [{"name": "double", "user": user if user is not None else {"token": "double-token"}}],
            "contexts": [
                {"name": "double", "context": {"cluster": "double", "user": "double", "namespace": namespace}}
            ],
        }
        path.write_text(yaml.safe_dump(document))
        return path

    # --- fault injection ------------------------------------------------------------------------

    def throttle(
        self, times: int = 1, *, retry_after: int = 1, match: Callable[[RecordedRequest], bool] | None = None
    ) -> None:
        """The max-in-flight/APF answer: 429, ``Retry-After``, a plain-text body."""
        self.faults.append(
            RestFault(
                match or (lambda _: True),
                times,
                429,
                (
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Retry-After", str(retry_after)),
                    ("X-Content-Type-Options", "nosniff"),
                ),
                TOO_MANY_REQUESTS_TEXT,
            )
        )

    def fail(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        times: int = 1,
        retry_after: int | None = None,
        match: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        """Answer with a Status body (e.g. 500 InternalError, 503 ServiceUnavailable, 403)."""
        headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
        if retry_after is not None:
            headers += (("Retry-After", str(retry_after)),)
        body = go_json(ApiFailure(code, reason, message).status()) + b"\n"
        self.faults.append(RestFault(match or (lambda _: True), times, code, headers, body))

    def drop_connection(
        self, times: int = 1, *, match: Callable[[RecordedRequest], bool] | None = None
    ) -> None:
        """Close the connection after reading the request, without an answer."""
        self.faults.append(RestFault(match or (lambda _: True), times, drop=True))

    def delay(
        self, seconds: float, times: int = 1, *, match: Callable[[RecordedRequest], bool] | None = None
    ) -> None:
        self.faults.append(RestFault(match or (lambda _: True), times, delay=seconds))

    def cut_exec(self, times: int, *, after_bytes: int, abort: bool = True) -> kube_exec.CutBudget:
        """Cut the next ``times`` subprocess exec sessions that send ``after_bytes`` bytes of
        output, right there: a TCP reset (``abort``) or a close frame without a status. The
        commands keep running."""
        self.exec_cuts = kube_exec.CutBudget(times, after_bytes, abort=abort)
        return self.exec_cuts

    def _orphan(self, process: trio.Process) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(kube_exec.reap_orphan, process)

    def script_exec(self, *steps: ExecStep) -> None:
        """The next exec session plays ``steps`` instead of running the command."""
        self.exec_scripts.append(tuple(steps))

    def _authorize(self, record: RecordedRequest, where: ResourcePath, verb: str | None = None) -> None:
        """Raise the apiserver's Forbidden unless a rule allows the request's verb on its resource."""
        if self.role_rules is None:
            return
        verb = verb or _verb(record, where)
        resource = f"{where.plural}/{where.subresource}" if where.subresource else where.plural
        for rule in self.role_rules:
            if (
                ({where.group, "*"} & set(rule.get("apiGroups", ())))
                and ({resource, "*"} & set(rule.get("resources", ())))
                and ({verb, "*"} & set(rule.get("verbs", ())))
            ):
                return
        named = f'{where.qualified} "{where.name}"' if where.name else where.qualified
        message = (
            f'{named} is forbidden: User "{self.service_account}" cannot {verb} resource "{resource}" '
            f'in API group "{where.group}" in the namespace "{where.namespace}"'
        )
        details: Obj = {"group": where.group, "kind": where.plural}
        if where.name:
            details = {"name": where.name, **details}
        raise ApiFailure(403, "Forbidden", message, details)

    def _take_fault(self, request: RecordedRequest) -> RestFault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.match(request):
                fault.times -= 1
                return fault
        return None

    # --- objects --------------------------------------------------------------------------------

    def get(
        self, plural: str, name: str, *, namespace: str = "default", api_version: str = "v1"
    ) -> Obj | None:
        return self.store.find(api_version, namespace, plural, name)

    def objects(self, plural: str, *, namespace: str = "default", api_version: str = "v1") -> list[Obj]:
        return [
            copy.deepcopy(o) for _, o in sorted(self.store.bucket((api_version, namespace, plural)).items())
        ]

    def put_object(self, obj: Obj, *, plural: str | None = None) -> Obj:
        """Store an object directly (as if created by someone else)."""
        api_version = obj.get("apiVersion", "v1")
        group, _, version = api_version.rpartition("/")
        kind = obj.get("kind", "")
        plural = plural or (kind.lower() + "s")
        where = ResourcePath(group, version, obj["metadata"].get("namespace", "default"), plural)
        return self.store.create(where, obj)

    def update_pod(self, name: str, change: Callable[[Obj], None], *, namespace: str = "default") -> Obj:
        """Change a pod as the kubelet would (emits MODIFIED)."""
        return self.store.mutate(ResourcePath("", "v1", namespace, "pods", name), change)

    def compact(self) -> None:
        self.store.compact()

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to watches that allow them."""
        for watch in list(self._watches):
            if watch.bookmarks:
                obj = {
                    "kind": watch.where.kind,
                    "apiVersion": watch.where.api_version,
                    "metadata": {"resourceVersion": str(self.store.revision)},
                }
                with suppress(trio.WouldBlock, trio.ClosedResourceError):
                    watch.send.send_nowait(("BOOKMARK", obj))

    def end_watches(self) -> None:
        """The server ends every watch stream (as at its timeout or a restart)."""
        for watch in list(self._watches):
            try:
                watch.send.send_nowait(None)
            except (trio.WouldBlock, trio.ClosedResourceError):
                watch.send.close()

    def _fan_out(self, event: StoredEvent) -> None:
        for watch in list(self._watches):
            watch.offer(event)
        if self.garbage_collection and (
            event.type == "DELETED" or event.object["metadata"].get("ownerReferences")
        ):
            for orphan in self.store.orphans():
                with suppress(ApiFailure):
                    self.store.remove(orphan)
        if event.collection[2] == "pods":
            if event.type == "ADDED" and self._nursery is not None:
                self._nursery.start_soon(self._pod_lifecycle, event.collection[1], event.object)
            if event.type == "DELETED":
                name = event.object["metadata"]["name"]
                for session in self.exec_sessions:
                    if (session.request.namespace, session.request.pod_name) == (event.collection[1], name):
                        kube_exec.kill_session(session)

    # --- connections ----------------------------------------------------------------------------

    async def handle(self, stream: trio.SocketStream) -> None:
        conn_stream: trio.abc.Stream = stream
        client_cert = False
        if self.tls is not None:
            ssl_stream = trio.SSLStream(stream, self.tls, server_side=True)
            try:
                with trio.fail_after(10):
                    await ssl_stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                await stream.aclose()
                return
            client_cert = ssl_stream.getpeercert() not in (None, {})
            conn_stream = ssl_stream
        try:
            await self._serve_http(conn_stream, client_cert)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await conn_stream.aclose()

    async def _serve_http(self, stream: trio.abc.Stream, client_cert: bool) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1024 * 1024)
        await serve_requests(conn, stream, functools.partial(self._answer, stream, conn, client_cert))

    async def _answer(
        self, stream: trio.abc.Stream, conn: h11.Connection, client_cert: bool, head: h11.Request, body: bytes
    ) -> bool:
        split = urlsplit(head.target.decode())
        record = RecordedRequest(
            method=head.method.decode(),
            path=split.path,
            query=tuple(parse_qsl(split.query, keep_blank_values=True)),
            headers=tuple((k.decode().lower(), v.decode()) for k, v in head.headers),
            body=body,
            client_cert=client_cert,
            at=trio.current_time(),
        )
        self.requests.append(record)
        fault = self._take_fault(record)
        if fault is not None and fault.delay:
            await trio.sleep(fault.delay)
        if fault is not None and fault.drop:
            return False
        if fault is not None and fault.status_code:
            await _respond(conn, stream, fault.status_code, fault.body, fault.headers)
        elif not self._authenticated(record):
            await _respond_failure(conn, stream, unauthorized())
        elif (record.header("upgrade") or "").lower() == "websocket":
            await self._websocket(conn, stream, record)
            return False
        else:
            await self._rest(conn, stream, record)
        return True

    def _authenticated(self, record: RecordedRequest) -> bool:
        if self.tokens is None and not self.client_cert_auth:
            return True
        authorization = record.header("authorization") or ""
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
        if self.tokens is not None and token in self.tokens:
            return True
        return self.client_cert_auth and record.client_cert

    # --- REST -----------------------------------------------------------------------------------

    async def _rest(self, conn: h11.Connection, stream: trio.abc.Stream, record: RecordedRequest) -> None:
        where = parse_path(record.path)
        try:
            if where is None:
                raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
            if where.subresource == "exec":
                raise bad_request("Upgrade request required")
            self._authorize(record, where)
            if record.method == "GET" and not where.name and _parse_bool(record.params("watch")):
                await self._watch(conn, stream, record, where)
                return
            code, body = self._rest_call(record, where)
        except ApiFailure as failure:
            await _respond_failure(conn, stream, failure)
            return
        await _respond(conn, stream, code, go_json(body) + b"\n", (("Content-Type", "application/json"),))

    def _rest_call(self, record: RecordedRequest, where: ResourcePath) -> tuple[int, Obj]:
        method = record.method
        if where.subresource == "scale" and where.name and where.plural in WITH_SCALE_SUBRESOURCE:
            return self._scale_call(record, attrs.evolve(where, subresource=""))
        if where.subresource and where.subresource != "status":
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        if not where.name:
            if method == "GET":
                items = self.store.list(
                    where, record.param("labelSelector") or "", record.param("fieldSelector") or ""
                )
                limit = int(record.param("limit") or 0)
                chosen, token = page(items, limit, record.param("continue") or "")
                return 200, list_body(where, chosen, self.store.revision, token)
            if method == "POST":
                body = _json_body(record)
                if where.plural == "pods" and isinstance(body, dict):
                    # The pod strategy's PrepareForCreate: status is the server's, starting Pending.
                    body = dict(body, status={"phase": "Pending", "qosClass": _qos_class(body)})
                return 201, self.store.create(where, body)
            if method == "DELETE":
                items = self.store.list(
                    where, record.param("labelSelector") or "", record.param("fieldSelector") or ""
                )
                deleted = [
                    self._delete(attrs.evolve(where, name=i["metadata"]["name"]), record) for i in items
                ]
                return 200, list_body(where, deleted, self.store.revision)
            raise ApiFailure(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if method == "GET":
            return 200, self.store.get(where)
        if method == "PUT":
            return 200, self.store.replace(where, _json_body(record), subresource=where.subresource)
        if method == "PATCH":
            return 200, self.store.patch(where, _patch_body(record), subresource=where.subresource)
        if method == "DELETE" and not where.subresource:
            obj = self._delete(where, record)
            if where.plural == "pods":
                return 200, obj
            return 200, delete_status(where, obj)
        raise ApiFailure(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _scale_call(self, record: RecordedRequest, scaled: ResourcePath) -> tuple[int, Obj]:
        """``{plural}/{name}/scale``: the autoscaling/v1 Scale view of ``scaled``; a PATCH is merged
        into the current Scale and then stored as a PUT of the result would be."""
        if record.method == "GET":
            return 200, self.store.get_scale(scaled)
        if record.method == "PUT":
            return 200, self.store.update_scale(scaled, _json_body(record))
        if record.method == "PATCH":
            patch = _patch_body(record)
            if not isinstance(patch, dict):
                raise bad_request("the body of the request was in an unknown format")
            return 200, self.store.update_scale(scaled, merge_patch(self.store.get_scale(scaled), patch))
        raise ApiFailure(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _delete(self, where: ResourcePath, record: RecordedRequest) -> Obj:
        obj = self.store.get(where)
        options = _json_body(record) if record.body else {}
        if not isinstance(options, dict):
            raise bad_request("the body of the request was in an unknown format")
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != obj["metadata"].get("uid"):
            raise ApiFailure(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {obj['metadata'].get('uid')}",
            )
        if where.plural != "pods":
            return self.store.remove(where)
        grace_text = record.param("gracePeriodSeconds")
        grace = int(grace_text) if grace_text is not None else options.get("gracePeriodSeconds")
        if grace is None:
            grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        grace = max(int(grace), 0) if grace >= 0 else 1
        phase = (obj.get("status") or {}).get("phase")
        if not (obj.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
            grace = 0
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        stamp = now_rfc3339()
        if grace == 0 or self.pod_termination_delay <= 0:
            removed = self.store.remove(where)
            removed["metadata"].update(deletionTimestamp=stamp, deletionGracePeriodSeconds=grace)
            return removed

        def mark(pod: Obj) -> None:
            pod["metadata"].update(deletionTimestamp=stamp, deletionGracePeriodSeconds=grace)

        marked = self.store.mutate(where, mark)
        assert self._nursery is not None
        self._nursery.start_soon(
            self._finish_termination, where, min(float(grace), self.pod_termination_delay)
        )
        return marked

    async def _finish_termination(self, where: ResourcePath, seconds: float) -> None:
        await trio.sleep(seconds)
        with suppress(ApiFailure):
            self.store.remove(where)

    async def _watch(
        self, conn: h11.Connection, stream: trio.abc.Stream, record: RecordedRequest, where: ResourcePath
    ) -> None:
        watch = _Watch(
            where,
            record.param("labelSelector") or "",
            record.param("fieldSelector") or "",
            _parse_bool(record.params("allowWatchBookmarks")),
        )
        rv_text = record.param("resourceVersion") or ""
        initial: list[tuple[str, Obj]] = []
        expired: Obj | None = None
        if rv_text in ("", "0"):
            initial = [("ADDED", obj) for obj in self.store.list(where) if watch.matches(obj)]
        else:
            try:
                revision = int(rv_text)
            except ValueError:
                raise bad_request(f"invalid resource version: {rv_text}") from None
            if revision < self.store.compacted:
                expired = ApiFailure(
                    410, "Expired", f"too old resource version: {revision} ({self.store.compacted + 1})"
                ).status()
            else:
                initial = [
                    (event.type, event.object)
                    for event in self.store.events_since(revision, where.collection)
                    if watch.matches(event.object)
                ]
        self._watches.append(watch)
        timeout_text = record.param("timeoutSeconds")
        timeout = float(timeout_text) if timeout_text else math.inf
        try:
            await _send(
                conn,
                stream,
                h11.Response(
                    status_code=200,
                    reason=b"OK",
                    headers=_headers(
                        (
                            ("Content-Type", "application/json"),
                            ("Transfer-Encoding", "chunked"),
                        )
                    ),
                ),
            )
            if expired is not None:
                await _send(
                    conn, stream, h11.Data(data=go_json({"type": "ERROR", "object": expired}) + b"\n")
                )
            else:
                for kind, obj in initial:
                    await _send(conn, stream, h11.Data(data=go_json({"type": kind, "object": obj}) + b"\n"))
                with trio.move_on_after(timeout):
                    async for item in watch.receive:
                        if item is None:
                            break
                        kind, obj = item
                        await _send(
                            conn, stream, h11.Data(data=go_json({"type": kind, "object": obj}) + b"\n")
                        )
            await _send(conn, stream, h11.EndOfMessage())
        finally:
            self._watches.remove(watch)
            watch.send.close()

    # --- pods -----------------------------------------------------------------------------------

    def _behaviour(self, pod: Obj) -> PodBehaviour:
        return self.pod_behaviour(pod) if callable(self.pod_behaviour) else self.pod_behaviour

    async def _pod_lifecycle(self, namespace: str, pod: Obj) -> None:
        behaviour = self._behaviour(pod)
        where = ResourcePath("", "v1", namespace, "pods", pod["metadata"]["name"])
        try:
            await trio.sleep(behaviour.schedule_delay)
            if behaviour.unschedulable is not None:
                message = behaviour.unschedulable
                self.store.mutate(where, lambda p: _unschedulable(p, message))
                return
            self.store.mutate(where, _scheduled)
            if behaviour.waiting is not None:
                reason, message = behaviour.waiting
                self.store.mutate(where, lambda p: _waiting(p, reason, message))
                return
            await trio.sleep(behaviour.start_delay)
            if behaviour.final_phase is not None:
                self.store.mutate(where, lambda p: _finished(p, behaviour))
                return
            self.store.mutate(where, _running)
        except ApiFailure:
            return

    # --- exec -----------------------------------------------------------------------------------

    async def _websocket(
        self, conn: h11.Connection, stream: trio.abc.Stream, record: RecordedRequest
    ) -> None:
        where = parse_path(record.path)
        try:
            if where is None or where.plural != "pods" or where.subresource != "exec":
                raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
            if record.method not in ("GET", "POST"):
                raise ApiFailure(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            # The apiserver authorizes a WebSocket exec as "create", whatever the HTTP method.
            self._authorize(record, where, verb="create")
            pod = self.store.get(ResourcePath("", "v1", where.namespace, "pods", where.name))
            request = self._exec_request(record, where, pod)
        except ApiFailure as failure:
            await _respond_failure(conn, stream, failure)
            return
        key = record.header("sec-websocket-key")
        if record.header("sec-websocket-version") != "13" or not key:
            await _raw_close(stream, b"HTTP/1.1 400 Bad Request\r\n\r\n")
            return
        # x/net reads only the first header line (Header.Get) and splits it on commas.
        lines = record.header_lines("sec-websocket-protocol")
        offered = tuple(p.strip() for p in lines[0].split(",")) if lines else ("",)
        chosen: str | None
        if self.force_subprotocol is not None:
            chosen = self.force_subprotocol
        elif self.translator and V5 in offered:
            chosen = V5
        else:
            chosen = next((p for p in offered if p in self.legacy_protocols), None)
        if chosen is None:
            await _raw_close(stream, b"HTTP/1.1 403 Forbidden\r\n\r\n")
            return
        headers = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(key.encode())),
        ]
        if chosen:
            headers.append((b"Sec-WebSocket-Protocol", chosen.encode()))
        await _send(
            conn,
            stream,
            h11.InformationalResponse(status_code=101, headers=headers, reason=b"Switching Protocols"),
        )
        trailing, _ = conn.trailing_data
        session = ExecSession(request=request, subprotocol=chosen, offered=offered)
        self.exec_sessions.append(session)
        peer = WsPeer(stream, Connection(ConnectionType.SERVER, trailing_data=bytes(trailing)), session)
        await self._exec_session(peer, pod)

    def _exec_request(self, record: RecordedRequest, where: ResourcePath, pod: Obj) -> ExecRequest:
        spec = pod.get("spec") or {}
        containers = spec.get("containers") or []
        names = [c.get("name", "") for c in containers]
        container = record.param("container") or ""
        if not container:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {where.name}, choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {where.name}")
        if not spec.get("nodeName"):
            raise bad_request(f"pod {where.name} does not have a host assigned")
        stdin, stdout = _parse_bool(record.params("stdin")), _parse_bool(record.params("stdout"))
        stderr, tty = _parse_bool(record.params("stderr")), _parse_bool(record.params("tty"))
        if not (stdin or stdout or stderr):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        spec_container = containers[names.index(container)]

        def lookup(plural: str, name: str, key: str | None) -> Any:
            obj = self.store.find("v1", where.namespace, plural, name)
            if obj is None:
                return None
            if key is None:
                if plural == "secrets":
                    return {k: decode_secret_value(obj, k) for k in (obj.get("data") or {})}
                return dict(obj.get("data") or {})
            return decode_secret_value(obj, key) if plural == "secrets" else (obj.get("data") or {}).get(key)

        return ExecRequest(
            namespace=where.namespace,
            pod_name=where.name,
            container=container,
            command=tuple(record.params("command")),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            tty=tty,
            pod=pod,
            env=kube_exec.container_env(pod, spec_container, lookup),
        )

    def _plan(self, request: ExecRequest) -> ExecPlan:
        if self.exec_scripts:
            return Script(self.exec_scripts.popleft())
        if self.exec_plan is not None:
            return self.exec_plan(request)
        env = {"PATH": _container_path(), "HOSTNAME": request.pod_name, **request.env}
        return Subprocess(request.command, env, self.exec_cwd)

    async def _exec_session(self, peer: WsPeer, pod: Obj) -> None:
        request = peer.session.request
        first = 1 if request.stdout else 2 if request.stderr else 3
        try:
            async with trio.open_nursery() as nursery:

                async def watch_client() -> None:
                    await peer.reader()
                    if not peer.hung:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(watch_client)
                try:
                    await peer.message(bytes([first]))
                    if not _container_running(pod, request.container):
                        cause = f'unable to upgrade connection: container not found ("{request.container}")'
                        await peer.message(b"\x03" + internal_error_status(cause))
                        peer.session.status_sent = internal_error_status(cause)
                        await peer.close()
                    else:
                        plan = self._plan(request)
                        if isinstance(plan, Script):
                            await kube_exec.play_script(peer, plan.steps)
                        else:
                            peer.cuts = self.exec_cuts
                            await kube_exec.run_subprocess(peer, plan, self._orphan)
                except kube_exec.SessionEnded:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            # x/net's Conn.Close ends every session: a close frame (1000) unless the socket is
            # already gone, then FIN. A hung peer just drops the socket.
            with trio.move_on_after(2) as scope:
                scope.shield = True
                if peer.hung:
                    await peer.close_tcp()
                else:
                    await peer.close()
            peer.session.finished.set()


# --- pod status transitions ----------------------------------------------------------------------


def _verb(record: RecordedRequest, where: ResourcePath) -> str:
    """The RBAC verb the apiserver derives from a request."""
    if record.method == "GET":
        if where.name:
            return "get"
        return "watch" if _parse_bool(record.params("watch")) else "list"
    if record.method == "DELETE":
        return "delete" if where.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(record.method, record.method.lower())


def _container_names(pod: Obj, init: bool = False) -> list[Obj]:
    return list((pod.get("spec") or {}).get("initContainers" if init else "containers") or [])


def _status_entry(container: Obj, state: Obj, ready: bool = False) -> Obj:
    return {
        "name": container.get("name", ""),
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "image": container.get("image", ""),
        "imageID": "",
        "started": "running" in state,
    }


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> Obj:
    condition: Obj = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339(),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _qos_class(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(res)
        and (r.get("requests") or {}).get(res, (r.get("limits") or {}).get(res))
        == (r.get("limits") or {}).get(res)
        for r in resources
        for res in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _unschedulable(pod: Obj, message: str) -> None:
    pod.setdefault("status", {"phase": "Pending"})
    pod["status"]["conditions"] = [_condition("PodScheduled", "False", "Unschedulable", message)]


def _scheduled(pod: Obj) -> None:
    pod.setdefault("spec", {})["nodeName"] = "double-node"
    pod.setdefault("status", {"phase": "Pending"})
    init = _container_names(pod, init=True)
    waiting_reason = "PodInitializing" if init else "ContainerCreating"
    pod["status"].update(
        conditions=[
            _condition("PodScheduled", "True"),
            _condition(
                "Initialized", "False" if init else "True", "ContainersNotInitialized" if init else ""
            ),
            _condition("Ready", "False", "ContainersNotReady"),
            _condition("ContainersReady", "False", "ContainersNotReady"),
        ],
        hostIP="10.0.0.2",
        podIP="10.1.0.7",
        startTime=now_rfc3339(),
        containerStatuses=[
            _status_entry(c, {"waiting": {"reason": waiting_reason}}) for c in _container_names(pod)
        ],
    )
    if init:
        pod["status"]["initContainerStatuses"] = [
            _status_entry(c, {"waiting": {"reason": "PodInitializing"}}) for c in init
        ]


def _waiting(pod: Obj, reason: str, message: str) -> None:
    state = {"waiting": {"reason": reason, "message": message}}
    pod["status"]["containerStatuses"] = [_status_entry(c, state) for c in _container_names(pod)]


def _completed_init(pod: Obj) -> None:
    init = _container_names(pod, init=True)
    if init:
        done = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": now_rfc3339(),
                "finishedAt": now_rfc3339(),
                "containerID": "containerd://" + uuid.uuid4().hex,
            }
        }
        pod["status"]["initContainerStatuses"] = [_status_entry(c, done) for c in init]


def _running(pod: Obj) -> None:
    _completed_init(pod)
    state = {"running": {"startedAt": now_rfc3339()}}
    pod["status"]["phase"] = "Running"
    pod["status"]["conditions"] = [
        _condition("PodScheduled", "True"),
        _condition("Initialized", "True"),
        _condition("Ready", "True"),
        _condition("ContainersReady", "True"),
    ]
    pod["status"]["containerStatuses"] = [
        dict(_status_entry(c, state, ready=True), containerID="containerd://" + uuid.uuid4().hex)
        for c in _container_names(pod)
    ]


def _finished(pod: Obj, behaviour: PodBehaviour) -> None:
    _completed_init(pod)
    phase = behaviour.final_phase or "Failed"
    code = 0 if phase == "Succeeded" else behaviour.exit_code
    state = {
        "terminated": {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": now_rfc3339(),
            "finishedAt": now_rfc3339(),
        }
    }
    pod["status"]["phase"] = phase
    if behaviour.final_reason:
        pod["status"]["reason"] = behaviour.final_reason
    if behaviour.final_message:
        pod["status"]["message"] = behaviour.final_message
    pod["status"]["containerStatuses"] = [_status_entry(c, state) for c in _container_names(pod)]


def _container_running(pod: Obj, container: str) -> bool:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return "running" in (status.get("state") or {})
    return False


# --- HTTP plumbing -------------------------------------------------------------------------------


def _json_body(record: RecordedRequest) -> Any:
    import json

    try:
        return json.loads(record.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("the body of the request was in an unknown format") from None


def _patch_body(record: RecordedRequest) -> Any:
    kind = (record.header("content-type") or "").split(";")[0].strip()
    if kind not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        raise ApiFailure(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            "application/merge-patch+json, application/strategic-merge-patch+json",
        )
    return _json_body(record)


def _reason(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode()
    except ValueError:
        return b""


def _headers(extra: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [
        ("Audit-Id", str(uuid.uuid4())),
        ("Cache-Control", "no-cache, private"),
        *extra,
        ("Date", email.utils.formatdate(usegmt=True)),
    ]


async def _send(conn: h11.Connection, stream: trio.abc.Stream, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _respond(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    code: int,
    body: bytes,
    headers: tuple[tuple[str, str], ...],
) -> None:
    all_headers = [*_headers(headers), ("Content-Length", str(len(body)))]
    await _send(conn, stream, h11.Response(status_code=code, headers=all_headers, reason=_reason(code)))
    await _send(conn, stream, h11.Data(data=body))
    await _send(conn, stream, h11.EndOfMessage())


async def _respond_failure(conn: h11.Connection, stream: trio.abc.Stream, failure: ApiFailure) -> None:
    await _respond(
        conn, stream, failure.code, go_json(failure.status()) + b"\n", (("Content-Type", "application/json"),)
    )


async def _raw_close(stream: trio.abc.Stream, data: bytes) -> None:
    """What x/net's hijacked handshake writes: a bare status line, no headers, then close."""
    await stream.send_all(data)
    await stream.aclose()


# --- serving -------------------------------------------------------------------------------------


@asynccontextmanager
async def serve_kube_api(*, tls: ssl.SSLContext | None = None) -> AsyncIterator[KubeApiDouble]:
    """Run the double on 127.0.0.1 (an ephemeral port) until the block ends. ``tls`` is a
    server-side context (e.g. from trustme); without it the double speaks plain HTTP."""
    api = KubeApiDouble(tls=tls)
    async with trio.open_nursery() as nursery:
        api._nursery = nursery
        listeners = await nursery.start(functools.partial(trio.serve_tcp, api.handle, 0, host="127.0.0.1"))
        api.port = listeners[0].socket.getsockname()[1]
        try:
            yield api
        finally:
            for session in api.exec_sessions:
                kube_exec.kill_session(session)
            nursery.cancel_scope.cancel()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _container_path() -> str:
    """This host's PATH as the container's, without the directories this user cannot search: in a
    container every PATH entry is searchable, so a missing executable is "not found" there, never
    the "permission denied" a root-only entry (/root/...) gives a normal user here."""
    entries = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and os.path.isdir(e) and os.access(e, os.X_OK))
