"""The job's Secret, PodDisruptionBudget and Pod, checked against the real Kubernetes 1.33 JSON
schemas (strict: no unknown fields) and against the Go runner's shapes."""

from __future__ import annotations

import base64
from typing import Any

import attrs
import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.executors.kubernetes.pod_security import baseline_violations, restricted_violations
from trunner.executors.base import JobNaming
from trunner.executors.kubernetes.names import JobIdentity, job_identity
from trunner.executors.kubernetes.podspec import (
    MAX_ARGUMENT_BYTES,
    SECRET_MAX_BYTES,
    PodSpecError,
    build_job_objects,
    job_problems,
    main_command,
    shell_command,
)
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.kube.objects import (
    Affinity,
    Capabilities,
    LabelSelector,
    NodeAffinity,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodAffinityTerm,
    PodAntiAffinity,
    PodSecurityContext,
    Quantity,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    Toleration,
    WeightedPodAffinityTerm,
    to_wire,
)
from trunner.models import JobFile, JobVariable, RunnerJob, VariableScope

JOB = RunnerJob(
    id="Z2lkOi8vb3BzbGV2ZWwvUnVubmVyczo6Sm9iUnVuLzIyNQ",
    image="alpine:3.20",
    commands=("echo hello", "ls -la"),
    variables=(
        JobVariable("EVERYWHERE", "both"),
        JobVariable("AWS_ACCESS_KEY", "main-only", scope=VariableScope.MAIN),
        JobVariable(
            "REPO_CLONE_URL", "https://token@example.com/repo.git", sensitive=True, scope=VariableScope.INIT
        ),
    ),
    files=(JobFile("clone-repo", '#!/bin/sh\ngit clone "$REPO_CLONE_URL" "$1"\n'), JobFile("empty")),
    init_commands=("/opslevel/clone-repo .", "ls"),
    init_image="public.ecr.aws/opslevel/cli:v2022.02.25",
)

FULL = JobPodConfig(
    namespace="jobs",
    shell="/bin/bash",
    workdir="/workspace",
    lifetime=1800.5,
    resources=ResourceRequirements(
        requests={
            "cpu": Quantity("500m"),
            "memory": Quantity("512Mi"),
            "ephemeral-storage": Quantity("64Mi"),
        },
        limits={"cpu": Quantity("2"), "memory": Quantity("2Gi"), "nvidia.com/gpu": Quantity("1")},
    ),
    helper_image="registry.local/opslevel-runner:dev",
    pull_policy="Always",
    service_account_name="job-runner",
    termination_grace_period_seconds=30,
    dns_policy="ClusterFirst",
    node_selector={"kubernetes.io/os": "linux", "pool": "jobs"},
    annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "note": "a, b = c"},
    security_context=PodSecurityContext(
        run_as_user=1000,
        run_as_non_root=True,
        fs_group=2000,
        supplemental_groups=(3000,),
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    ),
    tolerations=(
        Toleration(key="dedicated", operator="Equal", value="jobs", effect="NoSchedule"),
        Toleration(operator="Exists", effect="NoExecute", toleration_seconds=60),
    ),
    affinity=Affinity(
        node_affinity=NodeAffinity(
            required_during_scheduling_ignored_during_execution=NodeSelector(
                (NodeSelectorTerm(match_expressions=(NodeSelectorRequirement("arch", "In", ("amd64",)),)),)
            )
        ),
        pod_anti_affinity=PodAntiAffinity(
            preferred_during_scheduling_ignored_during_execution=(
                WeightedPodAffinityTerm(
                    10,
                    PodAffinityTerm(
                        "kubernetes.io/hostname", label_selector=LabelSelector(match_labels={"app": "x"})
                    ),
                ),
            )
        ),
    ),
)

CONFIGS = {
    "defaults": JobPodConfig(),
    "full": FULL,
    "agent mode": JobPodConfig(agent_mode=True, security_context=PodSecurityContext(run_as_user=1000)),
    "no helper": JobPodConfig(helper_image=None),
}


def identity_for(job: RunnerJob) -> JobIdentity:
    return job_identity(
        job, runner_id="1234", owner="runner-0", naming=JobNaming.NUMBER, unix_time=1734383310
    )


def wire(
    job: RunnerJob, config: JobPodConfig
) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    objects = build_job_objects(job, identity_for(job), config)
    secret = None if objects.secret is None else to_wire(objects.secret)
    return secret, to_wire(objects.pod_disruption_budget), to_wire(objects.pod)


def secret_values(secret: dict[str, Any] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret or {}).get("data", {}).items()}


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, "1.33.0", strict=True)


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def env_of(container: dict[str, Any], secret: dict[str, Any] | None = None) -> dict[str, str]:
    """The container's environment, with the values of ``secret`` that ``secretKeyRef`` names."""
    env = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert secret is not None and ref["name"] == secret["metadata"]["name"]
            env[entry["name"]] = secret_values(secret)[ref["key"]]
        else:
            env[entry["name"]] = entry["value"]
    return env


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("job", [JOB, RunnerJob(id="7", image="busybox")], ids=["init+files", "bare"])
def test_every_object_passes_the_strict_kubernetes_schema(name: str, job: RunnerJob) -> None:
    for obj in wire(job, CONFIGS[name]):
        if obj is not None:
            validate(obj)


def test_the_secret_holds_the_files_and_the_sensitive_values_immutably() -> None:
    secret, _, pod = wire(JOB, JobPodConfig())
    assert secret is not None
    assert secret["kind"] == "Secret" and secret["immutable"] is True and secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "opslevel-job-225-1734383310"
    assert secret_values(secret) == {
        "file.0": JOB.files[0].contents,
        "file.1": "",
        "variable.2": "https://token@example.com/repo.git",
    }
    [volume] = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert volume["secret"] == {
        "secretName": "opslevel-job-225-1734383310",
        "items": [{"key": "file.0", "path": "clone-repo"}, {"key": "file.1", "path": "empty"}],
        "defaultMode": 0o777,
    }
    assert {"name": volume["name"], "mountPath": "/opslevel", "readOnly": True} in containers(pod)["job"][
        "volumeMounts"
    ]
    assert "configMap" not in repr(pod)


def test_no_value_of_a_sensitive_variable_is_in_the_pod_spec() -> None:
    _, _, pod = wire(JOB, JobPodConfig())
    assert "token@example.com" not in repr(pod)
    assert containers(pod)["init"]["env"][1] == {
        "name": "REPO_CLONE_URL",
        "valueFrom": {"secretKeyRef": {"name": "opslevel-job-225-1734383310", "key": "variable.2"}},
    }


def test_a_job_without_files_or_sensitive_values_gets_no_secret() -> None:
    job = RunnerJob(id="7", image="busybox", variables=(JobVariable("PLAIN", "x"),))
    secret, _, pod = wire(job, JobPodConfig())
    assert secret is None
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "scripts"]
    assert volume == {"name": "scripts", "emptyDir": {}}
    assert env_of(containers(pod)["job"]) == {"PLAIN": "x"}


def test_every_object_carries_the_job_labels() -> None:
    secret, pdb, pod = wire(JOB, JobPodConfig())
    labels = {
        "app.kubernetes.io/instance": "opslevel-job-225-1734383310",
        "app.kubernetes.io/managed-by": "runner-1234",
        "runner.opslevel.com/owner": "runner-0",
    }
    for obj in (secret, pdb, pod):
        assert obj is not None and obj["metadata"]["labels"] == labels
        assert obj["metadata"]["namespace"] == "default"


def test_disruption_budget_protects_exactly_the_job_pod() -> None:
    _, pdb, pod = wire(JOB, JobPodConfig())
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["spec"]["maxUnavailable"] == 0
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/instance"] == pod["metadata"]["name"]


def test_pod_shape_matches_the_go_runner() -> None:
    _, _, pod = wire(JOB, JobPodConfig())
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 5
    assert [c["name"] for c in spec["initContainers"]] == ["helper", "init"]
    [job] = spec["containers"]
    assert job["name"] == "job" and job["image"] == "alpine:3.20"
    assert job["command"] == ["/bin/sh", "-c", "sleep 3600"]
    assert "resources" not in job and "securityContext" not in job
    helper = spec["initContainers"][0]
    assert helper["image"] == "public.ecr.aws/opslevel/opslevel-runner:v2026.7.8"
    assert helper["command"] == ["cp", "/opslevel-runner", "/mount"]
    assert helper["volumeMounts"] == [{"name": "shared", "mountPath": "/mount"}]
    assert job["volumeMounts"] == [
        {"name": "scripts", "mountPath": "/opslevel", "readOnly": True},
        {"name": "shared", "mountPath": "/mount", "readOnly": True},
        {"name": "workspace", "mountPath": "/jobs"},
    ]
    assert [v["name"] for v in spec["volumes"]] == ["scripts", "shared", "workspace"]
    assert spec["volumes"][2] == {"name": "workspace", "emptyDir": {}}
    for absent in (
        "securityContext",
        "serviceAccountName",
        "nodeSelector",
        "dnsPolicy",
        "tolerations",
        "affinity",
    ):
        assert absent not in spec
    assert "annotations" not in pod["metadata"]


def test_init_container_runs_the_init_commands_in_the_job_directory() -> None:
    _, _, pod = wire(JOB, JobPodConfig())
    init = containers(pod)["init"]
    assert init["image"] == "public.ecr.aws/opslevel/cli:v2022.02.25"
    assert init["command"] == [
        "/bin/sh",
        "-e",
        "-c",
        f"exec 2>&1;\nmkdir -p /jobs/{JOB.id};\ncd /jobs/{JOB.id};\nset -xv;\n/opslevel/clone-repo .;\nls",
    ]
    assert init["volumeMounts"] == [
        {"name": "scripts", "mountPath": "/opslevel", "readOnly": True},
        {"name": "workspace", "mountPath": "/jobs"},
    ]


def test_init_image_defaults_to_the_job_image() -> None:
    job = RunnerJob(id="1", image="alpine", init_commands=("true",))
    _, _, pod = wire(job, JobPodConfig())
    assert containers(pod)["init"]["image"] == "alpine"


def test_no_init_container_without_init_commands() -> None:
    _, _, pod = wire(RunnerJob(id="1", image="alpine", init_image="ignored"), JobPodConfig())
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["helper"]


def test_helper_can_be_disabled() -> None:
    _, _, pod = wire(RunnerJob(id="1", image="alpine"), JobPodConfig(helper_image=None))
    assert "initContainers" not in pod["spec"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["scripts", "workspace"]
    assert all(m["mountPath"] != "/mount" for m in pod["spec"]["containers"][0]["volumeMounts"])


def test_variables_reach_only_their_scope() -> None:
    secret, _, pod = wire(JOB, JobPodConfig())
    by_name = containers(pod)
    assert env_of(by_name["job"], secret) == {"EVERYWHERE": "both", "AWS_ACCESS_KEY": "main-only"}
    assert env_of(by_name["init"], secret) == {
        "EVERYWHERE": "both",
        "REPO_CLONE_URL": "https://token@example.com/repo.git",
    }
    assert "env" not in by_name["helper"]
    # The init-scoped secret appears nowhere in the job container, not even inside another value.
    assert "token@example.com" not in repr(by_name["job"])


def test_main_command_is_the_go_runner_form() -> None:
    assert main_command(JobPodConfig(), JOB) == (
        "/bin/sh",
        "-e",
        "-c",
        f"exec 2>&1;\nmkdir -p /jobs/{JOB.id};\ncd /jobs/{JOB.id};\nset -xv;\necho hello;\nls -la",
    )
    assert main_command(FULL, RunnerJob(id="9", image="x", commands=("make",))) == (
        "/bin/bash",
        "-e",
        "-c",
        "exec 2>&1;\nmkdir -p /workspace/9;\ncd /workspace/9;\nset -xv;\nmake",
    )


def test_an_odd_job_id_cannot_break_out_of_the_shell_line_or_the_workdir() -> None:
    for job_id in ("1; rm -rf /", "../../etc"):
        job = RunnerJob(id=job_id, image="x", commands=("true",))
        first = main_command(JobPodConfig(), job)[3].splitlines()[1]
        directory = first.removeprefix("mkdir -p ").removesuffix(";")
        assert directory.startswith("/jobs/") and directory.count("/") == 2, first
        assert ".." not in directory and ";" not in directory and " " not in directory


@pytest.mark.parametrize("name", [n for n, c in CONFIGS.items() if c.service_account_name is None])
def test_a_job_pod_gets_no_api_token_unless_its_config_names_a_service_account(name: str) -> None:
    """Without a service account in the config the pod would run as the namespace's default account with
    its token mounted: job commands get no Kubernetes credentials they were not meant to have."""
    _, _, pod = wire(JOB, CONFIGS[name])
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod["spec"]


def test_full_settings_reach_the_pod() -> None:
    _, _, pod = wire(JOB, FULL)
    spec = pod["spec"]
    assert pod["metadata"]["namespace"] == "jobs"
    assert pod["metadata"]["annotations"] == FULL.annotations
    assert spec["serviceAccountName"] == "job-runner"
    assert "automountServiceAccountToken" not in spec, "the named account's own setting applies"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "jobs"}
    assert spec["securityContext"] == {
        "runAsUser": 1000,
        "runAsNonRoot": True,
        "fsGroup": 2000,
        "supplementalGroups": [3000],
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["tolerations"][1] == {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]}]}]
    }
    by_name = containers(pod)
    assert by_name["job"]["command"] == ["/bin/bash", "-c", "sleep 1801"]
    assert {c["imagePullPolicy"] for c in by_name.values()} == {"Always"}
    assert by_name["helper"]["image"] == "registry.local/opslevel-runner:dev"
    expected_resources = {
        "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "64Mi"},
        "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": "1"},
    }
    assert by_name["job"]["resources"] == by_name["init"]["resources"] == expected_resources
    assert "resources" not in by_name["helper"]
    assert {"name": "workspace", "mountPath": "/workspace"} in by_name["init"]["volumeMounts"]


def test_agent_mode_runs_job_containers_privileged_as_root() -> None:
    _, _, pod = wire(JOB, CONFIGS["agent mode"])
    assert pod["spec"]["securityContext"] == {"runAsUser": 0, "fsGroup": 0}
    by_name = containers(pod)
    assert by_name["job"]["securityContext"] == by_name["init"]["securityContext"] == {"privileged": True}
    assert "securityContext" not in by_name["helper"]


def test_files_up_to_one_mebibyte_fit() -> None:
    job = RunnerJob(id="1", image="x", files=(JobFile("a", "x" * (SECRET_MAX_BYTES - 2)), JobFile("b", "é")))
    assert job_problems(job) == []
    secret = wire(job, JobPodConfig())[0]
    assert secret is not None
    validate(secret)


@pytest.mark.parametrize("sensitive", [False, True])
def test_files_and_sensitive_values_over_one_mebibyte_fail_the_job_clearly(sensitive: bool) -> None:
    job = RunnerJob(
        id="1",
        image="x",
        files=(JobFile("a", "x" * (SECRET_MAX_BYTES - 8)), JobFile("b", "é")),
        variables=(JobVariable("TOKEN", "12345678", sensitive=sensitive),),
    )
    if not sensitive:
        assert job_problems(job) == []
        return
    with pytest.raises(PodSpecError) as caught:
        build_job_objects(job, identity_for(job), JobPodConfig())
    assert caught.value.problems == [
        "files: the job's files and sensitive variables hold 1048578 bytes, more than the 1048576 bytes "
        "(1 MiB) a Kubernetes Secret can hold"
    ]


def test_job_problems_name_each_field() -> None:
    job = RunnerJob(
        id="1",
        image=" ",
        files=(JobFile("ok.sh"), JobFile("sub/dir"), JobFile("ok.sh"), JobFile("..")),
        variables=(JobVariable("GOOD"), JobVariable(""), JobVariable("A=B")),
    )
    assert job_problems(job) == [
        "image: a Kubernetes job needs an image",
        "files[1].name: 'sub/dir' is not a valid file name here (1-253 letters, digits, '-', '_' or '.'; not '.' or '..')",
        "files[2].name: 'ok.sh' appears more than once",
        "files[3].name: '..' is not a valid file name here (1-253 letters, digits, '-', '_' or '.'; not '.' or '..')",
        "variables[1].key: '' is not a valid environment variable name",
        "variables[2].key: 'A=B' is not a valid environment variable name",
    ]


_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
_file_names = st.from_regex(r"[-._a-zA-Z0-9]{1,30}", fullmatch=True).filter(lambda n: n not in (".", ".."))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    job_id=st.text(min_size=1, max_size=40),
    variables=st.lists(
        st.builds(JobVariable, _keys, st.text(max_size=30), st.booleans(), st.sampled_from(VariableScope)),
        max_size=6,
    ),
    files=st.lists(
        st.builds(JobFile, _file_names, st.text(max_size=50)), max_size=4, unique_by=lambda f: f.name
    ),
    init_commands=st.lists(st.text(max_size=20), max_size=3),
    config=st.sampled_from(list(CONFIGS.values())),
)
def test_any_runnable_job_gives_valid_objects(
    job_id: str,
    variables: list[JobVariable],
    files: list[JobFile],
    init_commands: list[str],
    config: JobPodConfig,
) -> None:
    job = RunnerJob(
        id=job_id,
        image="alpine",
        variables=tuple(variables),
        files=tuple(files),
        init_commands=tuple(init_commands),
        commands=("true",),
    )
    secret, pdb, pod = wire(job, config)
    for obj in (secret, pdb, pod):
        if obj is not None:
            validate(obj)
    by_name = containers(pod)
    main = [v for v in variables if v.scope is not VariableScope.INIT]
    assert {e["name"] for e in by_name["job"].get("env", [])} == {v.key for v in main}
    expected: dict[str, str] = {}
    for variable in main:
        expected[variable.key] = variable.value
    assert env_of(by_name["job"], secret) == expected
    assert (secret is None) == (not files and not any(v.sensitive for v in variables))
    for variable in variables:
        if variable.sensitive and variable.value:
            assert f"'value': {variable.value!r}" not in repr(pod)


# --- security contexts ------------------------------------------------------------------------------

RESTRICTED = JobPodConfig(
    security_context=PodSecurityContext(
        run_as_non_root=True,
        run_as_user=65532,
        run_as_group=65532,
        fs_group=65532,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    ),
    container_security_context=SecurityContext(
        allow_privilege_escalation=False, capabilities=Capabilities(drop=("ALL",))
    ),
)


def test_every_container_gets_the_container_security_context() -> None:
    context = SecurityContext(
        allow_privilege_escalation=False,
        capabilities=Capabilities(drop=("ALL",)),
        read_only_root_filesystem=True,
        run_as_user=1000,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )
    _, _, pod = wire(JOB, JobPodConfig(container_security_context=context))
    validate(pod)
    by_name = containers(pod)
    assert set(by_name) == {"helper", "init", "job"}
    for container in by_name.values():
        assert container["securityContext"] == to_wire(context)


def test_agent_mode_adds_privileged_to_the_job_containers_only() -> None:
    context = SecurityContext(read_only_root_filesystem=True)
    _, _, pod = wire(JOB, JobPodConfig(agent_mode=True, container_security_context=context))
    by_name = containers(pod)
    assert (
        by_name["job"]["securityContext"]
        == by_name["init"]["securityContext"]
        == {
            "privileged": True,
            "readOnlyRootFilesystem": True,
        }
    )
    assert by_name["helper"]["securityContext"] == {"readOnlyRootFilesystem": True}


@pytest.mark.parametrize("job", [JOB, RunnerJob(id="7", image="busybox")], ids=["init+files", "bare"])
def test_the_restricted_profile_passes_the_restricted_pod_security_level(job: RunnerJob) -> None:
    _, _, pod = wire(job, RESTRICTED)
    validate(pod)
    assert restricted_violations(pod) == []


def test_without_a_profile_a_job_pod_breaks_the_restricted_level_in_each_container() -> None:
    _, _, pod = wire(JOB, JobPodConfig())
    found = restricted_violations(pod)
    for container in ("helper", "init", "job"):
        for control in ("privilege escalation", "running as non-root", "seccomp", "capabilities"):
            assert f"{control}: container {container}" in "\n".join(found)
    _, _, agent = wire(JOB, CONFIGS["agent mode"])
    assert "privileged: container job" in baseline_violations(agent)


# --- argument size ----------------------------------------------------------------------------------


def _script_size(job: RunnerJob, commands: tuple[str, ...]) -> int:
    return len(shell_command(JobPodConfig(), job, commands)[3].encode())


@pytest.mark.parametrize("field", ["commands", "init_commands"])
def test_a_script_longer_than_one_exec_argument_may_be_is_refused_before_anything_runs(field: str) -> None:
    job = RunnerJob(id="1", image="alpine")
    overhead = _script_size(job, ("",))
    fits = attrs.evolve(job, **{field: ("x" * (MAX_ARGUMENT_BYTES - overhead),)})
    assert _script_size(fits, getattr(fits, field)) == MAX_ARGUMENT_BYTES == 131071
    assert job_problems(fits) == []
    # Bytes count, not characters: one "é" more than fits in characters of one byte.
    too_long = attrs.evolve(job, **{field: ("x" * (MAX_ARGUMENT_BYTES - overhead - 1) + "é",)})
    wire_name = "commands" if field == "commands" else "initCommands"
    [problem] = job_problems(too_long)
    assert problem == (
        f"{wire_name}: the script of the job's {wire_name} is {MAX_ARGUMENT_BYTES + 1} bytes, more than the "
        "131071 bytes Linux takes in one argument (MAX_ARG_STRLEN, 128 KiB with its terminating NUL); it "
        "cannot be run in a pod (put long scripts in the job's files)"
    )
    with pytest.raises(PodSpecError):
        build_job_objects(too_long, identity_for(too_long), JobPodConfig())
