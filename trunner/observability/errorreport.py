"""Error reporting to Sentry when ``SENTRY_DSN`` is set, as the Go runner does: fatal errors, and
each job that ends failed (any outcome but ``success`` and ``canceled``) with its last lines.

Nothing secret reaches an event: every string of every event (message, tags, contexts, extra,
exception values, breadcrumbs, keys included) passes through the process's masker (the API token,
the Faktory password, in every form :mod:`trunner.logs.secret_forms` knows) and the masker of
every job running or recently ended, twice: in an event processor, before the SDK serialises (and
could truncate) the event, and again in ``before_send``. Frames carry no local variables.

Under trio: the SDK's transport sends from its own daemon thread (``capture_*`` only queues), no
integration is enabled but deduplication (the logging integration would turn runner-log records
into breadcrumbs; stdlib, argv and the excepthook hook what trunner reports itself), and
:func:`close` flushes with a bounded timeout only once ``trio.run`` has returned.
"""

from __future__ import annotations

import collections
import inspect
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sentry_sdk
import sentry_sdk.consts
from sentry_sdk.integrations.dedupe import DedupeIntegration

from trunner import __version__
from trunner.logs.mask import Masker
from trunner.net.proxy import proxy_for

DSN_ENV = "SENTRY_DSN"
FLUSH_TIMEOUT = 2.0
"""Seconds the last events may take to leave at exit (the Go runner's ``sentry.Flush``)."""
RECENT_JOBS = 32
"""Masks of jobs that have ended are kept this long (by count) for events that follow them."""
RECENT_ERRORS = 10

Mask = Callable[[str], str]

log = logging.getLogger("trunner.errorreport")


class _Reporting:
    def __init__(self, process_mask: Masker) -> None:
        self.process_mask = process_mask
        self.jobs: dict[int, Mask] = {}
        self.recent: collections.deque[Mask] = collections.deque(maxlen=RECENT_JOBS)
        self.errors = _RecentErrors()

    def masks(self) -> list[Mask]:
        return [self.process_mask.mask_text, *self.jobs.values(), *self.recent]


class _RecentErrors(logging.Handler):
    """The runner log's last error records, for the event of a start-up failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: collections.deque[str] = collections.deque(maxlen=RECENT_ERRORS)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:
            self.handleError(record)


_state: _Reporting | None = None
_processor_added = False


def enabled() -> bool:
    return _state is not None


def init(environ: Mapping[str, str], *, secrets: Iterable[str] = ()) -> bool:
    """Start reporting when ``SENTRY_DSN`` is set and not empty; ``secrets`` (the API token, the
    Faktory password) are masked in every event. A DSN the SDK refuses is logged, not fatal, as
    in the Go runner. ``SENTRY_ENVIRONMENT`` and ``SENTRY_RELEASE`` are read as every Sentry
    SDK reads them; the release defaults to ``trunner@<version>``."""
    global _state, _processor_added
    dsn = environ.get(DSN_ENV, "").strip()
    if not dsn or _state is not None:
        return _state is not None
    reporting = _Reporting(Masker((f"secret {i}", s) for i, s in enumerate(secrets) if s))
    try:
        # Go's proxy choice for the DSN's host; "" keeps the SDK from choosing by other rules.
        proxy = proxy_for(dsn, environ)
        sentry_sdk.init(
            dsn=dsn,
            http_proxy=proxy.url if proxy is not None and not dsn.startswith("https:") else "",
            https_proxy=proxy.url if proxy is not None and dsn.startswith("https:") else "",
            proxy_headers=proxy.headers if proxy is not None and proxy.headers else None,
            release=environ.get("SENTRY_RELEASE") or f"trunner@{__version__}",
            environment=environ.get("SENTRY_ENVIRONMENT") or None,
            server_name=socket.gethostname(),
            default_integrations=False,
            auto_enabling_integrations=False,
            integrations=[DedupeIntegration()],
            **_no_local_variables(),
            max_breadcrumbs=0,
            attach_stacktrace=False,
            send_client_reports=False,
            enable_backpressure_handling=False,
            before_send=_scrub,
        )
    except Exception as exc:
        log.error("sentry.Init: %s", reporting.process_mask.mask_text(str(exc)))
        return False
    if not _processor_added:
        sentry_sdk.get_global_scope().add_event_processor(_scrub)
        _processor_added = True
    logging.getLogger("trunner").addHandler(reporting.errors)
    _state = reporting
    return True


def _no_local_variables() -> dict[str, Any]:
    # ``data_collection`` (sentry-sdk 2.76 on) supersedes ``include_local_variables``, which 3.x
    # refuses; earlier 2.x releases know only the latter (and send no PII by default).
    options = inspect.signature(sentry_sdk.consts.ClientConstructor.__init__).parameters
    if "data_collection" in options:
        return {"data_collection": {"stack_frame_variables": False, "user_info": False}}
    return {"include_local_variables": False}


def close(timeout: float = FLUSH_TIMEOUT) -> None:
    """Send what is queued, waiting at most ``timeout`` seconds (blocking: call it outside
    ``trio.run``), and stop reporting."""
    global _state
    reporting, _state = _state, None
    if reporting is None:
        return
    logging.getLogger("trunner").removeHandler(reporting.errors)
    sentry_sdk.get_client().close(timeout=timeout)
    sentry_sdk.get_global_scope().set_client(None)


def set_runner(runner_id: str) -> None:
    """Tag every later event with the runner's id."""
    if _state is not None:
        sentry_sdk.get_global_scope().set_tag("runner", runner_id)


@contextmanager
def masking(mask: Mask) -> Iterator[None]:
    """Mask every event with ``mask`` (a job's masker) while the block runs, and for the next
    :data:`RECENT_JOBS` jobs after it."""
    reporting = _state
    if reporting is None:
        yield
        return
    key = id(mask)
    reporting.jobs[key] = mask
    try:
        yield
    finally:
        reporting.jobs.pop(key, None)
        reporting.recent.append(mask)


def report_failed_job(
    *, job_id: str, number: str, outcome: str, message: str, tail: list[str], mask: Mask
) -> None:
    """One event for a job that did not succeed: the Go runner's message and ``job``/``outcome``
    tags, and its last lines (already masked) as the ``logs`` context's ``runner_logs``."""
    if _state is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.add_event_processor(lambda event, hint: _mask_tree(event, [mask]))
        scope.set_tag("outcome", outcome)
        scope.set_tag("job", number)
        scope.set_context("job", {"id": job_id, "number": number, "outcome": outcome, "message": message})
        scope.set_context("logs", {"runner_logs": list(tail)})
        scope.capture_message(f"[job: {number}] Ended with Outcome: {outcome}", level="error")


def report_fatal(what: str) -> None:
    """One event for a failure that ends the process: ``what``, and the runner log's last errors."""
    if _state is None:
        return
    errors = list(_state.errors.messages)
    message = f"{what}: {errors[-1]}" if errors else what
    with sentry_sdk.new_scope() as scope:
        scope.set_context("runner_log", {"last_errors": errors})
        scope.capture_message(message, level="fatal")


def report_crash(exc: BaseException) -> None:
    """An exception that ends the process."""
    if _state is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_level("fatal")
        scope.capture_exception(exc)


def _scrub(event: Any, hint: Any) -> Any:
    reporting = _state
    if reporting is None:
        return None
    return _mask_tree(event, reporting.masks())


def _mask_tree(value: Any, masks: list[Mask]) -> Any:
    if isinstance(value, str):
        for mask in masks:
            value = mask(value)
        return value
    if isinstance(value, dict):
        return {_mask_tree(k, masks): _mask_tree(v, masks) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_tree(item, masks) for item in value]
    if isinstance(value, bytes):
        return _mask_tree(value.decode("utf-8", "replace"), masks)
    return value
