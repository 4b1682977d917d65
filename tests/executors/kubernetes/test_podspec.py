"""The job's ConfigMap, PodDisruptionBudget and Pod, checked against the real Kubernetes 1.33 JSON
schemas (strict: no unknown fields) and against the Go runner's shapes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunner.executors.base import JobNaming
from trunner.executors.kubernetes.names import JobIdentity, job_identity
from trunner.executors.kubernetes.podspec import (
    CONFIG_MAP_MAX_BYTES,
    PodSpecError,
    build_job_objects,
    job_problems,
    main_command,
)
from trunner.executors.kubernetes.settings import JobPodConfig
from trunner.kube.objects import (
    Affinity,
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


def wire(job: RunnerJob, config: JobPodConfig) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    objects = build_job_objects(job, identity_for(job), config)
    return to_wire(objects.config_map), to_wire(objects.pod_disruption_budget), to_wire(objects.pod)


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, "1.33.0", strict=True)


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("job", [JOB, RunnerJob(id="7", image="busybox")], ids=["init+files", "bare"])
def test_every_object_passes_the_strict_kubernetes_schema(name: str, job: RunnerJob) -> None:
    for obj in wire(job, CONFIGS[name]):
        validate(obj)


def test_config_map_holds_the_files_immutably() -> None:
    config_map, _, pod = wire(JOB, JobPodConfig())
    assert config_map["kind"] == "ConfigMap" and config_map["immutable"] is True
    assert config_map["metadata"]["name"] == "opslevel-job-225-1734383310"
    assert config_map["data"] == {"clone-repo": JOB.files[0].contents, "empty": ""}
    [volume] = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"] == {"name": "opslevel-job-225-1734383310", "defaultMode": 0o777}
    assert {"name": volume["name"], "mountPath": "/opslevel", "readOnly": True} in containers(pod)["job"][
        "volumeMounts"
    ]


def test_every_object_carries_the_job_labels() -> None:
    config_map, pdb, pod = wire(JOB, JobPodConfig())
    labels = {
        "app.kubernetes.io/instance": "opslevel-job-225-1734383310",
        "app.kubernetes.io/managed-by": "runner-1234",
        "runner.opslevel.com/owner": "runner-0",
    }
    for obj in (config_map, pdb, pod):
        assert obj["metadata"]["labels"] == labels
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
        f"mkdir -p /jobs/{JOB.id};\ncd /jobs/{JOB.id};\nset -xv;\n/opslevel/clone-repo .;\nls",
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
    _, _, pod = wire(JOB, JobPodConfig())
    by_name = containers(pod)
    assert env_of(by_name["job"]) == {"EVERYWHERE": "both", "AWS_ACCESS_KEY": "main-only"}
    assert env_of(by_name["init"]) == {
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
        f"mkdir -p /jobs/{JOB.id};\ncd /jobs/{JOB.id};\nset -xv;\necho hello;\nls -la",
    )
    assert main_command(FULL, RunnerJob(id="9", image="x", commands=("make",))) == (
        "/bin/bash",
        "-e",
        "-c",
        "mkdir -p /workspace/9;\ncd /workspace/9;\nset -xv;\nmake",
    )


def test_an_odd_job_id_cannot_break_out_of_the_shell_line_or_the_workdir() -> None:
    for job_id in ("1; rm -rf /", "../../etc"):
        job = RunnerJob(id=job_id, image="x", commands=("true",))
        first = main_command(JobPodConfig(), job)[3].splitlines()[0]
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
    job = RunnerJob(
        id="1", image="x", files=(JobFile("a", "x" * (CONFIG_MAP_MAX_BYTES - 2)), JobFile("b", "é"))
    )
    assert job_problems(job) == []
    validate(wire(job, JobPodConfig())[0])


def test_files_over_one_mebibyte_fail_the_job_clearly() -> None:
    job = RunnerJob(id="1", image="x", files=(JobFile("a", "x" * CONFIG_MAP_MAX_BYTES), JobFile("b", "é")))
    with pytest.raises(PodSpecError) as caught:
        build_job_objects(job, identity_for(job), JobPodConfig())
    assert caught.value.problems == [
        "files: the job's files hold 1048578 bytes, more than the 1048576 bytes (1 MiB) "
        "a Kubernetes ConfigMap can hold"
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
    config_map, pdb, pod = wire(job, config)
    for obj in (config_map, pdb, pod):
        validate(obj)
    by_name = containers(pod)
    main_keys = {e["name"] for e in by_name["job"].get("env", [])}
    assert main_keys == {v.key for v in variables if v.scope is not VariableScope.INIT}
