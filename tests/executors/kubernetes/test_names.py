"""Names and labels of a job's objects: the Go runner's format, made DNS-1123 and label safe."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trunner.executors.base import JobNaming
from trunner.executors.kubernetes.names import (
    job_identity,
    label_value,
    leftover_selector,
    object_name,
)
from trunner.kube.names import is_dns_label, is_label_value
from trunner.models import RunnerJob

API_JOB = RunnerJob(id="Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iUnVuLzIyNQ", image="alpine")


def test_api_mode_uses_the_job_number() -> None:
    identity = job_identity(
        API_JOB, runner_id="1234", owner="runner-0", naming=JobNaming.NUMBER, unix_time=1734383310
    )
    assert identity.name == "opslevel-job-225-1734383310"
    assert identity.labels == {
        "app.kubernetes.io/instance": "opslevel-job-225-1734383310",
        "app.kubernetes.io/managed-by": "runner-1234",
        "runner.opslevel.com/owner": "runner-0",
    }
    assert identity.selector == {
        "app.kubernetes.io/instance": "opslevel-job-225-1734383310",
        "app.kubernetes.io/managed-by": "runner-1234",
    }


def test_faktory_mode_uses_the_job_id() -> None:
    job = RunnerJob(id="1234567890", image="alpine")
    identity = job_identity(job, runner_id="faktory", owner="h", naming=JobNaming.ID, unix_time=1)
    assert identity.name == "opslevel-job-1234567890-1"
    decodable = RunnerJob(id="MTIz", image="alpine")  # base64url of "123"
    assert decodable.number() == "123"
    by_id = job_identity(decodable, runner_id="faktory", owner="h", naming=JobNaming.ID, unix_time=1)
    assert by_id.name == object_name("MTIz", 1) != "opslevel-job-123-1"


def test_a_gid_in_faktory_mode_is_made_safe_and_stays_distinct() -> None:
    upper = object_name(API_JOB.id, 1)
    lower = object_name(API_JOB.id.lower(), 1)
    assert is_dns_label(upper) and is_dns_label(lower)
    assert upper != lower


def test_a_plain_key_is_kept_as_is() -> None:
    assert object_name("abc-123", 7) == "opslevel-job-abc-123-7"


def test_long_keys_are_shortened_with_a_hash() -> None:
    a = object_name("9" * 80, 1734383310)
    b = object_name("9" * 79 + "8", 1734383310)
    assert len(a) <= 63 and is_dns_label(a)
    assert a != b
    assert a.startswith("opslevel-job-999") and a.endswith("-1734383310")


def test_label_values() -> None:
    assert label_value("runner-1234") == "runner-1234"
    padded = label_value("runner-Z2lk==")
    assert is_label_value(padded) and padded.startswith("runner-Z2lk-")
    assert is_label_value(label_value("x" * 100))
    assert leftover_selector("runner-abc-0") == "runner.opslevel.com/owner=runner-abc-0"


@given(st.text(max_size=120), st.integers(min_value=0, max_value=2**34))
def test_every_key_gives_a_valid_name(key: str, unix_time: int) -> None:
    assert is_dns_label(object_name(key, unix_time))


@given(st.text(max_size=120))
def test_every_text_gives_a_valid_label_value(text: str) -> None:
    assert is_label_value(label_value(text))


@given(st.text(max_size=60), st.text(max_size=60))
def test_different_keys_give_different_names(a: str, b: str) -> None:
    if a != b:
        assert object_name(a, 1) != object_name(b, 1)
