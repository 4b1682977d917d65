"""Job validation stays linear in the number of files and variables: it runs on the event loop, and a
job's payload decides how many there are."""

from __future__ import annotations

from trunner.executors.kubernetes.podspec import job_problems
from trunner.models import JobFile, JobVariable, RunnerJob, validate_job


class CountingName(str):
    """A file name that counts the comparisons and hashes made with it."""

    operations = 0

    def __eq__(self, other: object) -> bool:
        CountingName.operations += 1
        return str.__eq__(self, other)

    def __hash__(self) -> int:
        CountingName.operations += 1
        return str.__hash__(self)


def operations_to_validate(files: int) -> int:
    job = RunnerJob(id="1", files=tuple(JobFile(CountingName(f"f{i}")) for i in range(files)))
    CountingName.operations = 0
    assert validate_job(job) == []
    return CountingName.operations


def test_duplicate_detection_does_a_constant_number_of_operations_per_file() -> None:
    small, large = operations_to_validate(500), operations_to_validate(2000)
    assert large <= 4 * small * 1.1, (small, large)
    assert large <= 10 * 2000


def test_forty_thousand_files_are_validated_with_duplicates_named_once() -> None:
    files = tuple(JobFile(f"file-{i}") for i in range(40_000))
    job = RunnerJob(
        id="1",
        image="alpine",
        files=(*files, JobFile("file-7"), JobFile("file-7"), JobFile("file-9")),
        variables=tuple(JobVariable(f"V{i}") for i in range(40_000)),
    )
    assert validate_job(job) == ["files: duplicate name(s): file-7, file-9"]
    problems = job_problems(job)
    assert [p.split(":")[0] for p in problems] == [
        "files[40000].name",
        "files[40001].name",
        "files[40002].name",
    ]
