"""Job-pod settings: the Go runner's flags and defaults, and the ``kubernetes:`` config section
(section > flag > env > top-level file key > default, as in the Go runner; Go's lenient key matching,
strict value checking)."""

from __future__ import annotations

import argparse
import logging
import socket
from typing import Any

import attrs
import kubernetes_validate
import pytest
import yaml

from trunner.config import ConfigError, SettingsSource, add_arguments
from trunner.executors.base import JobNaming
from trunner.executors.kubernetes.names import job_identity
from trunner.executors.kubernetes.podspec import build_pod
from trunner.executors.kubernetes.settings import (
    DEFAULT_HELPER_IMAGE,
    KubeJobSettings,
    KubernetesSection,
    resolve,
    section_overrides,
)
from trunner.executors.registry import job_pod_config
from trunner.executors.settings import JobRunSettings
from trunner.kube.objects import (
    AppArmorProfile,
    Capabilities,
    PodSecurityContext,
    Quantity,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    SELinuxOptions,
    Toleration,
    WindowsSecurityContextOptions,
    to_wire,
)
from trunner.models import RunnerJob


def source(
    argv: list[str] | None = None, *, env: dict[str, str] | None = None, file: str = ""
) -> SettingsSource:
    parser = argparse.ArgumentParser()
    add_arguments(parser, JobRunSettings)
    add_arguments(parser, KubeJobSettings)
    data: dict[str, Any] = (yaml.safe_load(file) or {}) if file else {}
    return SettingsSource(
        args=parser.parse_args(argv or []), environ=env or {}, file=data, source_name="opslevel.yaml"
    )


def test_defaults_are_the_go_runners() -> None:
    config = job_pod_config(source())
    assert config.namespace == "default"
    assert config.shell == "/bin/sh" and config.workdir == "/jobs"
    assert config.lifetime == 3600 and config.max_wait == 60
    assert config.termination_grace_period_seconds == 5
    assert config.helper_image == DEFAULT_HELPER_IMAGE
    assert config.pull_policy == "IfNotPresent"
    assert config.agent_mode is False
    assert config.service_account_name is None and config.dns_policy is None
    assert config.resources is not None
    assert config.resources.requests == {"cpu": "1000m", "memory": "1024Mi", "ephemeral-storage": "64Mi"}
    assert config.resources.limits == {"cpu": "1000m", "memory": "1024Mi", "ephemeral-storage": "26624Mi"}
    assert config.owner == socket.gethostname()


FULL_SECTION = """
kubernetes:
  namespace: jobs
  lifetime: 600
  shell: /bin/bash
  workingDir: /workspace
  annotations: {team: platform, "example.com/note": "a, b = c"}
  resources:
    requests: {cpu: 250m, memory: 1Gi}
    limits: {cpu: 2, nvidia.com/gpu: 1}
  serviceAccountName: job-runner
  terminationGracePeriodSeconds: 30
  dnsPolicy: ClusterFirstWithHostNet
  pullPolicy: Always
  securityContext:
    runAsUser: 1000
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  nodeSelector: {pool: jobs}
  agentMode: true
  helperImage: registry.local/helper:1
  tolerations:
    - {key: dedicated, operator: Equal, value: jobs, effect: NoSchedule}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions: [{key: arch, operator: In, values: [arm64]}]
"""


def test_the_kubernetes_section_overrides_flag_defaults() -> None:
    config = job_pod_config(source(file=FULL_SECTION))
    assert config.namespace == "jobs"
    assert config.lifetime == 600
    assert config.shell == "/bin/bash" and config.workdir == "/workspace"
    assert config.annotations == {"team": "platform", "example.com/note": "a, b = c"}
    assert config.service_account_name == "job-runner"
    assert config.termination_grace_period_seconds == 30
    assert config.dns_policy == "ClusterFirstWithHostNet"
    assert config.pull_policy == "Always"
    assert config.security_context == PodSecurityContext(
        run_as_user=1000, run_as_non_root=True, seccomp_profile=SeccompProfile("RuntimeDefault")
    )
    assert config.node_selector == {"pool": "jobs"}
    assert config.agent_mode is True
    assert config.helper_image == "registry.local/helper:1"
    assert config.tolerations == (
        Toleration(key="dedicated", operator="Equal", value="jobs", effect="NoSchedule"),
    )
    assert config.affinity is not None and config.affinity.node_affinity is not None
    # Per-quantity merge: the section's values replace only the flags they name.
    assert config.resources is not None
    assert config.resources.requests == {"cpu": "250m", "memory": "1Gi", "ephemeral-storage": "64Mi"}
    assert config.resources.limits == {
        "cpu": "2",
        "memory": "1024Mi",
        "ephemeral-storage": "26624Mi",
        "nvidia.com/gpu": "1",
    }


def test_the_resolved_settings_make_a_valid_pod() -> None:
    config = job_pod_config(source(file=FULL_SECTION.replace("agentMode: true", "agentMode: false")))
    job = RunnerJob(id="1", image="alpine", init_commands=("true",))
    identity = job_identity(job, runner_id="r", owner=config.owner, naming=JobNaming.NUMBER, unix_time=1)
    pod = to_wire(build_pod(job, identity, config))
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000


def test_the_section_beats_flags_and_env_with_one_line_per_disagreeing_key(caplog) -> None:
    file = """
job-pod-namespace: top-level
job-pod-max-wait: 90
kubernetes:
  namespace: from-section
  shell: /bin/bash
  lifetime: 600
  resources: {limits: {memory: 4Gi, cpu: "3"}, requests: {cpu: 300m}}
"""
    with caplog.at_level(logging.WARNING, logger="trunner"):
        config = job_pod_config(
            source(
                [
                    "--job-pod-namespace",
                    "from-flag",
                    "--job-pod-limits-memory",
                    "2048",
                    "--job-pod-requests-cpu",
                    "300",
                    "--job-pod-max-lifetime",
                    "600",
                ],
                env={"OPSLEVEL_JOB_POD_SHELL": "/bin/zsh"},
                file=file,
            )
        )
    assert config.namespace == "from-section"
    assert config.shell == "/bin/bash"
    assert config.lifetime == 600
    assert config.max_wait == 90  # a top-level key still works for what the section lacks
    assert config.resources is not None and config.resources.limits is not None
    assert config.resources.limits["memory"] == "4Gi"
    assert config.resources.limits["cpu"] == "3"
    # Only explicitly given values that disagree are reported (lifetime and the cpu request agree;
    # the cpu limit was a default).
    assert [r.getMessage() for r in caplog.records] == [
        "opslevel.yaml: kubernetes.namespace 'from-section' overrides --job-pod-namespace 'from-flag' "
        "(the kubernetes: section wins, as in the Go runner)",
        "opslevel.yaml: kubernetes.shell '/bin/bash' overrides OPSLEVEL_JOB_POD_SHELL '/bin/zsh' "
        "(the kubernetes: section wins, as in the Go runner)",
        "opslevel.yaml: kubernetes.resources.limits.memory 4Gi overrides --job-pod-limits-memory 2048 "
        "(the kubernetes: section wins, as in the Go runner)",
    ]


OVERRIDE_NOTE = "(the kubernetes: section wins, as in the Go runner)"


def test_resolve_takes_typed_settings_only() -> None:
    section = KubernetesSection(
        namespace="jobs", resources=ResourceRequirements(limits={"memory": Quantity("2Gi")})
    )
    run = JobRunSettings(job_pod_shell="/bin/bash", job_pod_max_lifetime=900)
    pods = KubeJobSettings(job_pod_namespace="from-flag", job_pod_requests_cpu=250, job_pod_limits_cpu=500)
    config = resolve(run, pods, section, hostname="runner-7")
    assert (config.namespace, config.shell, config.lifetime) == ("jobs", "/bin/bash", 900)
    assert config.owner == "runner-7"
    assert config.resources is not None
    assert config.resources.limits == {"cpu": "500m", "memory": "2Gi", "ephemeral-storage": "26624Mi"}
    assert resolve(run, attrs.evolve(pods, job_pod_owner="pod-0"), section, hostname="h").owner == "pod-0"


def test_section_overrides_name_the_origin_of_each_overridden_setting() -> None:
    section = KubernetesSection(
        namespace="jobs", shell="/bin/sh", resources=ResourceRequirements(limits={"cpu": Quantity("2")})
    )
    run = JobRunSettings(job_pod_shell="/bin/sh")
    pods = KubeJobSettings(job_pod_namespace="from-flag", job_pod_limits_cpu=1500)
    origins = {
        "job_pod_namespace": "--job-pod-namespace",
        "job_pod_shell": "RUNNER_JOB_POD_SHELL",
        "job_pod_limits_cpu": "job-pod-limits-cpu in opslevel.yaml",
    }
    assert section_overrides(run, pods, section, origins=origins, source_name="opslevel.yaml") == [
        f"opslevel.yaml: kubernetes.namespace 'jobs' overrides --job-pod-namespace 'from-flag' {OVERRIDE_NOTE}",
        "opslevel.yaml: kubernetes.resources.limits.cpu 2 overrides job-pod-limits-cpu in opslevel.yaml "
        f"1500 {OVERRIDE_NOTE}",
    ]
    # A setting left at its default is not "overridden": the section simply sets it.
    assert section_overrides(run, pods, section, origins={}, source_name="opslevel.yaml") == []


def test_origins_say_where_each_given_setting_came_from() -> None:
    given = source(
        ["--job-pod-namespace", "ns"],
        env={"OPSLEVEL_JOB_POD_SHELL": "/bin/zsh"},
        file="job-pod-max-wait: 90\n",
    )
    assert given.origins(KubeJobSettings) == {
        "job_pod_namespace": "--job-pod-namespace",
        "job_pod_max_wait": "job-pod-max-wait in opslevel.yaml",
    }
    assert given.origins(JobRunSettings) == {"job_pod_shell": "OPSLEVEL_JOB_POD_SHELL"}


def test_the_section_beats_top_level_keys() -> None:
    config = job_pod_config(source(file="job-pod-namespace: top\nkubernetes:\n  namespace: section\n"))
    assert config.namespace == "section"
    assert job_pod_config(source(file="job-pod-namespace: top\n")).namespace == "top"


def test_zero_leaves_a_resource_unset() -> None:
    config = job_pod_config(
        source(["--job-pod-limits-cpu", "0", "--job-pod-requests-ephemeral-storage", "0"])
    )
    assert config.resources is not None and config.resources.limits is not None
    assert "cpu" not in config.resources.limits
    assert config.resources.requests == {"cpu": "1000m", "memory": "1024Mi"}


def test_flag_forms_of_maps_and_switches() -> None:
    config = job_pod_config(
        source(
            [
                "--job-pod-node-selector",
                "pool=jobs,kubernetes.io/arch=amd64",
                "--job-pod-annotations",
                "a=1=2",
                "--job-pod-helper-enabled",
                "false",
                "--job-agent-mode",
                "--job-pod-owner",
                "runner-7f9c",
            ]
        )
    )
    assert config.node_selector == {"pool": "jobs", "kubernetes.io/arch": "amd64"}
    assert config.annotations == {"a": "1=2"}
    assert config.helper_image is None
    assert config.agent_mode is True
    assert config.owner == "runner-7f9c"
    assert job_pod_config(source(env={"RUNNER_POD_NAME": "runner-abc"})).owner == "runner-abc"


def problems(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        job_pod_config(source(**kwargs))
    return caught.value.problems


def test_section_mistakes_are_named_precisely_and_together() -> None:
    file = """
kubernetes:
  serviceAccount: typo
  lifetime: "ten"
  securityContext: {runAsUser: root, seLinuxOptions: {usr: x}}
  resources: {limits: {memory: lots}}
  tolerations: {key: x}
"""
    assert sorted(problems(file=file)) == sorted(
        [
            "opslevel.yaml: kubernetes.lifetime: expected a whole number, got 'ten'",
            "opslevel.yaml: kubernetes.securityContext.runAsUser: expected a whole number, got 'root'",
            "opslevel.yaml: kubernetes.resources.limits['memory']: not a Kubernetes quantity: 'lots' "
            "(e.g. 500m, 2, 1Gi, 512Mi)",
            "opslevel.yaml: kubernetes.tolerations: expected a list, got {'key': 'x'}",
        ]
    )


def test_section_values_are_checked() -> None:
    file = """
kubernetes:
  namespace: Not_A_Namespace
  lifetime: 0
  workingDir: relative
  pullPolicy: Sometimes
  terminationGracePeriodSeconds: -1
"""
    assert problems(file=file) == [
        "opslevel.yaml: kubernetes.namespace: must be a DNS-1123 label, got 'Not_A_Namespace'",
        "opslevel.yaml: kubernetes.lifetime: must be a number of seconds greater than 0, got 0",
        "opslevel.yaml: kubernetes.workingDir: must be an absolute path, got 'relative'",
        "opslevel.yaml: kubernetes.terminationGracePeriodSeconds: must be 0 or greater, got -1",
        "opslevel.yaml: kubernetes.pullPolicy: must be one of Always, IfNotPresent, Never, got 'Sometimes'",
    ]


def test_section_must_be_a_mapping() -> None:
    assert problems(file="kubernetes: [1]\n") == ["opslevel.yaml: kubernetes: expected a mapping, got [1]"]


def test_flag_mistakes_are_collected_with_section_mistakes() -> None:
    found = problems(
        argv=["--job-pod-pull-policy", "Sometimes", "--job-pod-max-wait", "0"],
        file="kubernetes:\n  lifetime: soon\n",
    )
    assert "opslevel.yaml: kubernetes.lifetime: expected a whole number, got 'soon'" in found
    assert any(p.startswith("--job-pod-pull-policy") and "must be one of Always" in p for p in found)
    assert any(p.startswith("--job-pod-max-wait") for p in found)


def test_bad_map_items_and_requests_above_limits() -> None:
    found = problems(
        argv=["--job-pod-node-selector", "pool=bad value!,/x=1", "--job-pod-requests-cpu", "2000"],
        file="kubernetes:\n  resources: {requests: {memory: 3Gi}}\n",
    )
    assert found == [
        "--job-pod-node-selector: pool='bad value!': not a valid label value",
        "--job-pod-node-selector: '/x': the prefix must be a DNS subdomain",
        "resources: the cpu request (2000m) is more than its limit (1000m)",
        "resources: the memory request (3Gi) is more than its limit (1024Mi)",
    ]
    [annotation_problem] = problems(argv=["--job-pod-annotations", "novalue"])
    assert annotation_problem == (
        "--job-pod-annotations (OPSLEVEL_JOB_POD_ANNOTATIONS): expected key=value items ('novalue' has no '='), "
        "got ('novalue',)"
    )


def test_section_keys_are_read_as_go_reads_them_with_a_warning_per_ignored_key(caplog) -> None:
    file = """
KUBERNETES:
  Namespace: jobs
  WORKINGDIR: /work
  lifetime: '1800'
  terminationgraceperiodseconds: "30"
  serviceAccount: typo
  helperImage: 42
  securityContext: {RunAsUser: '1000', seLinuxOptions: {usr: x}}
  resources: {Limits: {memory: 2Gi}}
"""
    with caplog.at_level(logging.WARNING, logger="trunner"):
        config = job_pod_config(source(file=file))
    assert config.namespace == "jobs" and config.workdir == "/work"
    assert config.lifetime == 1800 and config.termination_grace_period_seconds == 30
    assert config.helper_image == "42"
    assert config.security_context == PodSecurityContext(run_as_user=1000, se_linux_options=SELinuxOptions())
    assert config.resources is not None and config.resources.limits is not None
    assert config.resources.limits["memory"] == "2Gi"
    assert [r.getMessage() for r in caplog.records] == [
        "opslevel.yaml: kubernetes.serviceAccount: unknown key, ignored",
        "opslevel.yaml: kubernetes.securityContext.seLinuxOptions.usr: unknown key, ignored",
    ]


# --- security contexts ------------------------------------------------------------------------------


def test_container_settings_under_the_pod_security_context_are_an_error_not_ignored() -> None:
    file = """
kubernetes:
  securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false, Capabilities: {drop: [ALL]}}
"""
    assert problems(file=file) == [
        f"opslevel.yaml: kubernetes.securityContext.{key}: a container setting, which the pod securityContext "
        "does not have; put it under kubernetes.containerSecurityContext (it applies to the helper, init and "
        "job containers)"
        for key in ("allowPrivilegeEscalation", "Capabilities")
    ]


def test_every_container_security_context_field_is_read() -> None:
    file = """
kubernetes:
  containerSecurityContext:
    allowPrivilegeEscalation: false
    appArmorProfile: {type: Localhost, localhostProfile: jobs}
    capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
    privileged: false
    procMount: Default
    readOnlyRootFilesystem: true
    runAsGroup: 3000
    runAsNonRoot: true
    runAsUser: '2000'
    seLinuxOptions: {level: "s0:c123,c456"}
    seccompProfile: {type: RuntimeDefault}
    windowsOptions: {runAsUserName: job}
"""
    config = job_pod_config(source(file=file))
    assert config.container_security_context == SecurityContext(
        allow_privilege_escalation=False,
        app_armor_profile=AppArmorProfile("Localhost", "jobs"),
        capabilities=Capabilities(add=("NET_BIND_SERVICE",), drop=("ALL",)),
        privileged=False,
        proc_mount="Default",
        read_only_root_filesystem=True,
        run_as_group=3000,
        run_as_non_root=True,
        run_as_user=2000,
        se_linux_options=SELinuxOptions(level="s0:c123,c456"),
        seccomp_profile=SeccompProfile("RuntimeDefault"),
        windows_options=WindowsSecurityContextOptions(run_as_user_name="job"),
    )
    assert set(to_wire(config.container_security_context)) == {
        "allowPrivilegeEscalation",
        "appArmorProfile",
        "capabilities",
        "privileged",
        "procMount",
        "readOnlyRootFilesystem",
        "runAsGroup",
        "runAsNonRoot",
        "runAsUser",
        "seLinuxOptions",
        "seccompProfile",
        "windowsOptions",
    }


def test_wrong_security_context_values_are_reported_together() -> None:
    file = """
kubernetes:
  securityContext:
    runAsUser: -1
    fsGroupChangePolicy: Sometimes
    seccompProfile: {type: Localhost}
  containerSecurityContext:
    allowPrivilegeEscalation: false
    privileged: true
    procMount: Masked
    capabilities: {add: [CAP_SYS_ADMIN, " "]}
    appArmorProfile: {type: runtime/default}
    seccompProfile: {type: RuntimeDefault, localhostProfile: x.json}
    allowPrivilegeescalation: maybe
"""
    assert problems(file=file) == [
        "opslevel.yaml: kubernetes.containerSecurityContext.allowPrivilegeEscalation: expected true or false, "
        "got 'maybe'"
    ]
    file = file.replace("    allowPrivilegeescalation: maybe\n", "")
    w, c = "opslevel.yaml: kubernetes.securityContext", "opslevel.yaml: kubernetes.containerSecurityContext"
    assert problems(file=file) == [
        f"{w}.runAsUser: must be between 0 and 2147483647, got -1",
        f"{w}.fsGroupChangePolicy: must be one of OnRootMismatch, Always, got 'Sometimes'",
        f"{w}.seccompProfile.localhostProfile: required when the type is Localhost",
        f"{c}.procMount: must be one of Default, Unmasked, got 'Masked'",
        f"{c}.seccompProfile.localhostProfile: only allowed when the type is Localhost",
        f"{c}.appArmorProfile.type: must be one of RuntimeDefault, Localhost, Unconfined, got 'runtime/default'",
        f"{c}.capabilities.add[1]: must be a capability name such as NET_BIND_SERVICE or ALL",
        f"{c}: allowPrivilegeEscalation false and privileged true cannot be set together",
        f"{c}: allowPrivilegeEscalation false and capabilities.add SYS_ADMIN cannot be set together",
    ]


def test_non_root_with_uid_0_is_refused_across_pod_and_container() -> None:
    file = (
        "kubernetes:\n  securityContext: {runAsNonRoot: true}\n  containerSecurityContext: {runAsUser: 0}\n"
    )
    assert problems(file=file) == [
        "opslevel.yaml: kubernetes.securityContext/containerSecurityContext: runAsNonRoot true with runAsUser 0: "
        "the kubelet would not start the containers"
    ]


@pytest.mark.parametrize("where", ["section", "flag"])
def test_agent_mode_contradicting_the_container_security_context_is_refused(where: str) -> None:
    file = "kubernetes:\n  containerSecurityContext: {allowPrivilegeEscalation: false, runAsNonRoot: true}\n"
    if where == "section":
        file += "  agentMode: true\n"
    found = problems(file=file, argv=["--job-agent-mode"] if where == "flag" else None)
    assert len(found) == 2
    assert all("contradicts agent mode" in p for p in found)
