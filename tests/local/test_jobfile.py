import pytest

from trunner.local.jobfile import JobFileError, load_job, parse_job
from trunner.models import Outcome, RunnerJob, VariableScope
from trunner.wire import structure, unstructure

GO_EXAMPLE = """
id: "1"
image: alpine/curl
commands: ["export TEST=100", "echo \\"::set-outcome-var hello-world=42\\"", "echo $TEST", "echo $Secret", "/opslevel/check.sh"]
variables: [{key: Secret, value: "World!", sensitive: true}, {key: NotSecret, value: "World!", sensitive: false, scope: main}]
files: [{name: check.sh, contents: "#! /bin/sh\\necho Hello from inside the script\\n"}]
initCommands: []
initImage: ""
"""


def test_go_runner_example_loads():
    job = parse_job(GO_EXAMPLE, "job.yaml")
    assert job.image == "alpine/curl"
    assert job.commands[1] == 'echo "::set-outcome-var hello-world=42"'
    assert job.variables[0].sensitive and job.variables[0].scope is VariableScope.BOTH
    assert job.variables[1].scope is VariableScope.MAIN
    assert job.files[0].name == "check.sh"
    assert job.secrets() == ("World!",)


def test_json_works_too():
    job = parse_job('{"id": "7", "commands": ["true"], "initCommands": ["echo init"]}', "job.json")
    assert job.init_commands == ("echo init",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: '1'\ncommands: echo hi", "job.yaml: commands: expected a list, got string"),
        ("id: [1, 2]\ncommands: [a]", "job.yaml: id: expected a string"),
        (
            "id: '1'\nvariables: [{key: A, scope: everywhere}]",
            "variables[0].scope: unknown scope 'everywhere'",
        ),
        ("id: '1'\nfiles: [{name: a}, {name: a}]", "files: duplicate name(s): a"),
        (
            "id: '1'\nfiles: [{name: ../etc/passwd}]",
            "files[0].name: '../etc/passwd' is not a plain file name",
        ),
        ("id: '1'\nfiles: [{name: a, contents: [x]}]", "files[0].contents: expected a string"),
        ("id: '1'\ncommands: [[1]]", "commands[0]: expected a string"),
        ("- a list", "expected a mapping, got list"),
        ("id: [unclosed", "not valid YAML or JSON"),
        (
            "id: '1'\nvariables: [{key: A, sensitive: 'yes'}]",
            "variables[0].sensitive: expected true or false",
        ),
    ],
)
def test_bad_input_names_the_file_and_field(text, message):
    with pytest.raises(JobFileError) as info:
        parse_job(text, "job.yaml")
    assert message in str(info.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(JobFileError, match="cannot read job file"):
        load_job(str(tmp_path / "missing.yaml"))
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(JobFileError, match="not a UTF-8 text file"):
        load_job(str(binary))


def test_api_payload_tolerates_unknown_fields_and_null_scope():
    payload = {
        "id": "Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iUnVuLzIyNQ",
        "image": "img",
        "outcome": "unstarted",
        "status": "running",
        "commands": ["pwd"],
        "variables": [{"key": "A", "value": "x", "scope": None, "sensitive": False}],
        "files": [],
        "initCommands": [],
        "initImage": "",
        "newServerField": 1,
    }
    job = structure(payload, RunnerJob, what="runnerGetPendingJob")
    assert job.number() == "225"
    assert job.outcome is Outcome.UNSTARTED
    assert job.variables[0].scope is VariableScope.BOTH
    assert unstructure(job)["initCommands"] == []


def test_job_number_follows_the_go_rule():
    assert RunnerJob(id="Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iUnVuLzIyNQ").number() == "225"
    assert (
        RunnerJob(id="Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iU").number()
        == "Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iU"
    )
    assert RunnerJob(id="1").number() == "1"
    assert RunnerJob(id="padded==").number() == "padded=="
