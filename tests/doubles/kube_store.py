"""The object store of the Kubernetes API double: generic over resources, as the apiserver's
registry is. Pure logic (no I/O): paths, selectors, merge patches, resourceVersions, the event
history that watches replay, and the exact ``metav1.Status`` bodies the apiserver answers with.

Objects are plain JSON dicts here on purpose: this is the server side, which must accept and
return whatever a client sends, field for field.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs

Obj = dict[str, Any]

KINDS = {
    "pods": "Pod",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "services": "Service",
    "events": "Event",
    "serviceaccounts": "ServiceAccount",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "leases": "Lease",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
    "jobs": "Job",
    "roles": "Role",
    "rolebindings": "RoleBinding",
}
PLURALS = {kind: plural for plural, kind in KINDS.items()}
WITH_STATUS_SUBRESOURCE = frozenset(
    {"pods", "poddisruptionbudgets", "deployments", "replicasets", "statefulsets", "jobs", "services"}
)
WITH_SCALE_SUBRESOURCE = frozenset({"deployments", "replicasets", "statefulsets"})
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, UTF-8, with <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode()


# --- paths ---------------------------------------------------------------------------------------


@attrs.frozen
class ResourcePath:
    """``/api/v1/namespaces/{ns}/{plural}[/{name}[/{subresource}]]`` or the ``/apis/{group}/{version}``
    equivalent."""

    group: str
    version: str
    namespace: str
    plural: str
    name: str = ""
    subresource: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def kind(self) -> str:
        return kind_of(self.plural)

    @property
    def qualified(self) -> str:
        """How the apiserver names the resource in messages: ``pods``, ``leases.coordination.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def collection(self) -> tuple[str, str, str]:
        return (self.api_version, self.namespace, self.plural)


def kind_of(plural: str) -> str:
    if plural in KINDS:
        return KINDS[plural]
    singular = plural[:-1] if plural.endswith("s") else plural
    return singular[:1].upper() + singular[1:]


def parse_path(path: str) -> ResourcePath | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if len(rest) < 3 or rest[0] != "namespaces" or len(rest) > 5:
        return None
    namespace, plural = rest[1], rest[2]
    name = rest[3] if len(rest) > 3 else ""
    sub = rest[4] if len(rest) > 4 else ""
    return ResourcePath(group, version, namespace, plural, name, sub)


# --- Status bodies -------------------------------------------------------------------------------


class ApiFailure(Exception):
    """An error answer: HTTP ``code`` with a full metav1.Status body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(where: ResourcePath, name: str) -> Obj:
    details: Obj = {"name": name}
    if where.group:
        details["group"] = where.group
    details["kind"] = where.plural
    return details


def not_found(where: ResourcePath, name: str) -> ApiFailure:
    return ApiFailure(404, "NotFound", f'{where.qualified} "{name}" not found', _details(where, name))


def already_exists(where: ResourcePath, name: str) -> ApiFailure:
    return ApiFailure(
        409, "AlreadyExists", f'{where.qualified} "{name}" already exists', _details(where, name)
    )


OPTIMISTIC_LOCK = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def conflict(where: ResourcePath, name: str, why: str = OPTIMISTIC_LOCK) -> ApiFailure:
    return ApiFailure(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {where.qualified} "{name}": {why}',
        _details(where, name),
    )


def invalid(where: ResourcePath, name: str, field: str, detail: str) -> ApiFailure:
    return invalid_kind(where.group, where.kind, name, field, detail)


def invalid_kind(group: str, kind: str, name: str, field: str, detail: str) -> ApiFailure:
    """``errors.NewInvalid(GroupKind, name, errs)``: the kind is named ``Kind.group`` unless core."""
    qualified = f"{kind}.{group}" if group else kind
    details: Obj = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": "FieldValueInvalid", "message": detail, "field": field}]
    return ApiFailure(422, "Invalid", f'{qualified} "{name}" is invalid: {field}: {detail}', details)


def bad_request(message: str) -> ApiFailure:
    return ApiFailure(400, "BadRequest", message)


def unauthorized() -> ApiFailure:
    return ApiFailure(401, "Unauthorized", "Unauthorized")


# --- selectors ----------------------------------------------------------------------------------

_SET_TERM = re.compile(
    r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """The label selector grammar: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``,
    ``k notin (a,b)``, joined by commas."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(selector):
        match = _SET_TERM.match(term)
        if not match:
            raise bad_request(f"unable to parse requirement: {term!r}")
        negate, key, op, value, set_op, values = match.groups()
        if negate:
            checks.append(lambda labels, key=key: key not in labels)
        elif op in ("=", "=="):
            checks.append(lambda labels, key=key, value=value: labels.get(key) == value)
        elif op == "!=":
            checks.append(lambda labels, key=key, value=value: labels.get(key) != value)
        elif set_op:
            choices = {v.strip() for v in values.split(",") if v.strip()}
            if set_op == "in":
                checks.append(lambda labels, key=key, choices=choices: labels.get(key) in choices)
            else:
                checks.append(lambda labels, key=key, choices=choices: labels.get(key) not in choices)
        else:
            checks.append(lambda labels, key=key: key in labels)
    return lambda labels: all(check(labels) for check in checks)


def field_matcher(selector: str) -> Callable[[Obj], bool]:
    """Field selectors on ``metadata.name``, ``metadata.namespace`` and ``status.phase``."""
    checks: list[Callable[[Obj], bool]] = []
    for term in _split_terms(selector):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match or match.group(1) not in ("metadata.name", "metadata.namespace", "status.phase"):
            raise bad_request(
                f'"{term.strip()}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace", "status.phase"'
            )
        field, op, value = match.groups()
        section, key = field.split(".")

        def check(obj: Obj, section: str = section, key: str = key, value: str = value, op: str = op) -> bool:
            actual = (obj.get(section) or {}).get(key, "")
            return (actual == value) if op != "!=" else (actual != value)

        checks.append(check)
    return lambda obj: all(check(obj) for check in checks)


def selector_string(selector: Obj | None) -> str:
    """A ``metav1.LabelSelector`` as ``LabelSelectorAsSelector(...).String()`` writes it: requirements
    sorted by key, ``k=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``, values sorted."""
    if not selector:
        return ""
    terms: list[tuple[str, str]] = [
        (key, f"{key}={value}") for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = ",".join(sorted(expression.get("values") or []))
        written = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(operator)
        if written is None:
            raise bad_request(f'"{operator}" is not a valid label selector operator')
        terms.append((key, written))
    return ",".join(text for _, text in sorted(terms, key=lambda term: term[0]))


# --- merge patch ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- the store -----------------------------------------------------------------------------------


@attrs.frozen
class StoredEvent:
    resource_version: int
    type: str
    collection: tuple[str, str, str]
    object: Obj


class Store:
    """Objects by (apiVersion, namespace, plural) and name; one global resourceVersion counter
    (etcd's revision); every change appended to a history that watches replay. ``listeners``
    are called synchronously with each event (the server fans them out to watches)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Obj]] = {}
        self.history: list[StoredEvent] = []
        self.compacted = 0
        self._revision = itertools.count(1000)
        self.revision = 999
        self.listeners: list[Callable[[StoredEvent], None]] = []

    def _next_revision(self) -> int:
        self.revision = next(self._revision)
        return self.revision

    def _emit(self, kind: str, where: tuple[str, str, str], obj: Obj) -> None:
        event = StoredEvent(self.revision, kind, where, copy.deepcopy(obj))
        self.history.append(event)
        for listener in list(self.listeners):
            listener(event)

    def compact(self) -> None:
        """Forget the history up to now: watches from an older resourceVersion get 410 Expired."""
        self.compacted = self.revision
        self.history.clear()

    def bucket(self, where: tuple[str, str, str]) -> dict[str, Obj]:
        return self.objects.setdefault(where, {})

    def get(self, where: ResourcePath) -> Obj:
        obj = self.bucket(where.collection).get(where.name)
        if obj is None:
            raise not_found(where, where.name)
        return copy.deepcopy(obj)

    def find(self, api_version: str, namespace: str, plural: str, name: str) -> Obj | None:
        obj = self.objects.get((api_version, namespace, plural), {}).get(name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, where: ResourcePath, labels: str = "", fields: str = "") -> list[Obj]:
        match_labels = label_matcher(labels) if labels else (lambda _: True)
        match_fields = field_matcher(fields) if fields else (lambda _: True)
        items = [
            copy.deepcopy(obj)
            for _, obj in sorted(self.bucket(where.collection).items())
            if match_labels((obj.get("metadata") or {}).get("labels") or {}) and match_fields(obj)
        ]
        return items

    def create(self, where: ResourcePath, body: Obj) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be an object")
        name = metadata.get("name") or ""
        if not name and metadata.get("generateName"):
            name = metadata["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise invalid(where, "", "metadata.name", "Required value: name or generateName is required")
        if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            raise invalid(
                where,
                name,
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        if metadata.get("namespace") not in (None, "", where.namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        bucket = self.bucket(where.collection)
        if name in bucket:
            raise already_exists(where, name)
        obj.setdefault("apiVersion", where.api_version)
        obj.setdefault("kind", where.kind)
        metadata.update(
            name=name,
            namespace=where.namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=now_rfc3339(),
            resourceVersion=str(self._next_revision()),
        )
        if "spec" in obj:
            metadata.setdefault("generation", 1)
        check_owner_references(where, name, metadata)
        bucket[name] = obj
        self._emit("ADDED", where.collection, obj)
        return copy.deepcopy(obj)

    def replace(self, where: ResourcePath, body: Obj, *, subresource: str = "") -> Obj:
        """PUT: a stale ``metadata.resourceVersion`` is a 409 Conflict; none means unconditional."""
        current = self.get(where)
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(where, where.name)
        if (body.get("metadata") or {}).get("name", where.name) != where.name:
            raise bad_request("the name of the object does not match the name on the URL")
        return self._store_update(where, current, copy.deepcopy(body), subresource)

    def patch(self, where: ResourcePath, patch: Any, *, subresource: str = "") -> Obj:
        current = self.get(where)
        if not isinstance(patch, dict):
            raise bad_request("the body of the request was in an unknown format")
        sent_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(where, where.name)
        return self._store_update(where, current, merge_patch(current, patch), subresource)

    def _store_update(self, where: ResourcePath, current: Obj, new: Obj, subresource: str) -> Obj:
        if subresource == "status":
            updated = copy.deepcopy(current)
            updated["status"] = new.get("status", {})
        elif subresource:
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        else:
            updated = new
            if where.plural in WITH_STATUS_SUBRESOURCE:
                if "status" in current:
                    updated["status"] = current["status"]
                else:
                    updated.pop("status", None)
            if current.get("immutable") and (
                updated.get("data") != current.get("data")
                or updated.get("binaryData") != current.get("binaryData")
            ):
                raise invalid(
                    where, where.name, "data", "Forbidden: field is immutable when `immutable` is set"
                )
        metadata = updated.setdefault("metadata", {})
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in current["metadata"]:
                metadata[key] = current["metadata"][key]
        updated.setdefault("apiVersion", current.get("apiVersion"))
        updated.setdefault("kind", current.get("kind"))
        check_owner_references(where, where.name, metadata)
        if not subresource and updated.get("spec") != current.get("spec"):
            metadata["generation"] = int(current["metadata"].get("generation", 1)) + 1
        elif "generation" in current["metadata"]:
            metadata["generation"] = current["metadata"]["generation"]
        if updated == current:
            return copy.deepcopy(current)
        metadata["resourceVersion"] = str(self._next_revision())
        self.bucket(where.collection)[where.name] = updated
        self._emit("MODIFIED", where.collection, updated)
        return copy.deepcopy(updated)

    def get_scale(self, where: ResourcePath) -> Obj:
        """GET ``{plural}/{name}/scale`` (``where`` names the scaled object itself)."""
        return scale_of(self.get(where))

    def update_scale(self, where: ResourcePath, scale: Any) -> Obj:
        """PUT ``{plural}/{name}/scale`` as the apps registry's ScaleREST does it: the Scale is
        decoded and validated, a ``metadata.uid`` is a precondition, a stale ``metadata.resourceVersion``
        a 409 Conflict (none means unconditional), and only the object's ``spec.replicas`` changes."""
        current = self.get(where)
        if not isinstance(scale, dict):
            raise bad_request("the body of the request was in an unknown format")
        for field, value, go_type in (
            ("Scale.metadata", scale.get("metadata"), "v1.ObjectMeta"),
            ("Scale.spec", scale.get("spec"), "v1.ScaleSpec"),
        ):
            if value is not None and not isinstance(value, dict):
                raise undecodable_scale(value, field, go_type)
        replicas = (scale.get("spec") or {}).get("replicas")
        if replicas is None:
            replicas = 0
        if (
            isinstance(replicas, bool)
            or not isinstance(replicas, int)
            or not INT32_MIN <= replicas <= INT32_MAX
        ):
            raise undecodable_scale(replicas, "ScaleSpec.spec.replicas", "int32")
        if replicas < 0:
            raise invalid_kind(
                "autoscaling",
                "Scale",
                where.name,
                "spec.replicas",
                f"Invalid value: {replicas}: must be greater than or equal to 0",
            )
        metadata = scale.get("metadata") or {}
        if metadata.get("name") not in (None, "", where.name):
            raise bad_request(
                f"the name of the object ({metadata['name']}) does not match the name on the URL ({where.name})"
            )
        uid = metadata.get("uid")
        if uid and uid != current["metadata"]["uid"]:
            raise conflict(
                attrs.evolve(where, plural=f"{where.plural}/scale"),
                where.name,
                f"Precondition failed: UID in precondition: {uid}, "
                f"UID in object meta: {current['metadata']['uid']}",
            )
        sent_rv = metadata.get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(where, where.name)
        scaled = copy.deepcopy(current)
        scaled.setdefault("spec", {})["replicas"] = replicas
        return scale_of(self._store_update(where, current, scaled, ""))

    def mutate(self, where: ResourcePath, change: Callable[[Obj], None]) -> Obj:
        """Change a stored object in place as a controller (the kubelet, the scheduler) would."""
        current = self.get(where)
        updated = copy.deepcopy(current)
        change(updated)
        updated["metadata"]["resourceVersion"] = str(self._next_revision())
        self.bucket(where.collection)[where.name] = updated
        self._emit("MODIFIED", where.collection, updated)
        return copy.deepcopy(updated)

    def remove(self, where: ResourcePath) -> Obj:
        bucket = self.bucket(where.collection)
        obj = bucket.pop(where.name, None)
        if obj is None:
            raise not_found(where, where.name)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._next_revision())
        self._emit("DELETED", where.collection, obj)
        return obj

    def owner_exists(self, namespace: str, reference: Obj) -> bool:
        """The owner an ownerReference names exists: same namespace, same uid (a new object of
        the same name is another owner)."""
        kind = str(reference.get("kind", ""))
        plural = PLURALS.get(kind, kind.lower() + "s")
        owner = self.objects.get((reference.get("apiVersion", ""), namespace, plural), {}).get(
            reference.get("name", "")
        )
        return owner is not None and owner["metadata"].get("uid") == reference.get("uid")

    def orphans(self) -> list[ResourcePath]:
        """Objects whose every owner is gone: what the garbage collector deletes (background
        propagation, the default)."""
        found = []
        for (api_version, namespace, plural), bucket in self.objects.items():
            group, _, version = api_version.rpartition("/")
            for name, obj in bucket.items():
                references = obj["metadata"].get("ownerReferences") or []
                if references and not any(self.owner_exists(namespace, r) for r in references):
                    found.append(ResourcePath(group, version, namespace, plural, name))
        return found

    def events_since(self, revision: int, collection: tuple[str, str, str]) -> Iterator[StoredEvent]:
        for event in self.history:
            if event.resource_version > revision and event.collection == collection:
                yield event


def check_owner_references(where: ResourcePath, name: str, metadata: Obj) -> None:
    """ValidateOwnerReferences: each reference names its owner fully."""
    references = metadata.get("ownerReferences") or []
    if not isinstance(references, list):
        raise bad_request("metadata.ownerReferences must be a list")
    for reference in references:
        for field, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not (isinstance(reference, dict) and reference.get(field)):
                raise invalid(
                    where,
                    name,
                    f"metadata.ownerReferences.{field}",
                    f'Invalid value: "": {what} must not be empty',
                )


def scale_of(scaled: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale view of a Deployment, ReplicaSet or StatefulSet (the registry's
    ``scaleFromDeployment``); ``spec.replicas`` and ``status.selector`` are omitted when empty."""
    meta = scaled["metadata"]
    spec = scaled.get("spec") or {}
    scale: Obj = {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {},
        "status": {"replicas": (scaled.get("status") or {}).get("replicas", 0)},
    }
    # An apps/v1 object without spec.replicas was defaulted to 1 when it was created.
    replicas = spec.get("replicas", 1)
    if replicas:
        scale["spec"]["replicas"] = replicas
    selector = selector_string(spec.get("selector"))
    if selector:
        scale["status"]["selector"] = selector
    return scale


def undecodable_scale(value: Any, field: str, go_type: str) -> ApiFailure:
    """The 400 of a body that does not decode as a Scale (Go's UnmarshalTypeError)."""
    return bad_request(
        'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
        f"{_json_type(value)} into Go struct field {field} of type {go_type}"
    )


def _json_type(value: Any) -> str:
    """How Go's encoding/json names a JSON value in an UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def decode_secret_value(secret: Obj, key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode("utf-8", "replace")
    string_data = secret.get("stringData") or {}
    value = string_data.get(key)
    return value if isinstance(value, str) else None


def list_body(where: ResourcePath, items: list[Obj], revision: int, continue_token: str = "") -> Obj:
    metadata: Obj = {"resourceVersion": str(revision)}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": where.kind + "List",
        "apiVersion": where.api_version,
        "metadata": metadata,
        "items": items,
    }


def delete_status(where: ResourcePath, obj: Obj) -> Obj:
    details: Obj = {"name": where.name}
    if where.group:
        details["group"] = where.group
    details["kind"] = where.plural
    details["uid"] = obj["metadata"].get("uid", "")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def page(items: list[Obj], limit: int, continue_token: str) -> tuple[list[Obj], str]:
    """``limit``/``continue`` paging; the token is the base64 of the last name returned."""
    start = 0
    if continue_token:
        try:
            last = base64.urlsafe_b64decode(continue_token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise ApiFailure(400, "BadRequest", "continue key is not valid") from None
        start = next((i for i, obj in enumerate(items) if obj["metadata"]["name"] > last), len(items))
    chosen = items[start : start + limit] if limit > 0 else items[start:]
    more = limit > 0 and start + limit < len(items)
    token = (
        base64.urlsafe_b64encode(chosen[-1]["metadata"]["name"].encode()).decode() if more and chosen else ""
    )
    return chosen, token
