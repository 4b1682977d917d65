{{/* Chart name, overridable. */}}
{{- define "trunner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: "<release>-<chart>", or the release name when it already contains the chart name. */}}
{{- define "trunner.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trunner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trunner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trunner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trunner.labels" -}}
helm.sh/chart: {{ include "trunner.chart" . }}
{{ include "trunner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: runner
app.kubernetes.io/part-of: trunner
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "trunner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trunner.fullname" .) .Values.serviceAccount.name -}}
{{- else if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- fail "serviceAccount.name is required when serviceAccount.create is false: without it the runner's Roles would go to the namespace's default ServiceAccount, which every pod there mounts" -}}
{{- end -}}
{{- end -}}

{{- define "trunner.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Pod Security Standards' restricted level for job pods (jobPods.securityProfile: restricted). */}}
{{- define "trunner.restrictedJobPod" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
containerSecurityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
{{- end -}}

{{/* The "kubernetes:" section of trunner's config file: jobPods.config over the security profile. */}}
{{- define "trunner.jobPodConfig" -}}
{{- $config := deepCopy .Values.jobPods.config -}}
{{- if eq .Values.jobPods.securityProfile "restricted" -}}
{{- if or (get $config "agentMode") (has "--job-agent-mode" .Values.runner.extraArgs) -}}
{{- fail "jobPods.securityProfile restricted cannot be combined with agent mode, which runs job containers privileged as root" -}}
{{- end -}}
{{- $config = mergeOverwrite (include "trunner.restrictedJobPod" . | fromYaml) $config -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Job pods must not run as the runner: its account may create pods and exec into them. trunner matches
the config's keys case-insensitively, so the check does too. */}}
{{- define "trunner.checkJobServiceAccount" -}}
{{- range $key, $value := .Values.jobPods.config -}}
{{- if and (eq (lower $key) "serviceaccountname") (eq (toString $value) (include "trunner.serviceAccountName" $)) (eq (include "trunner.jobNamespace" $) $.Release.Namespace) -}}
{{- fail (printf "jobPods.config.%s is %q, the runner's own ServiceAccount: every job would get its rights to create pods and exec into them; give job pods an account of their own (or none)" $key (toString $value)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Namespace of the job pods. */}}
{{- define "trunner.jobNamespace" -}}
{{- default .Release.Namespace .Values.jobPods.namespace -}}
{{- end -}}

{{/* A number as trunner's flags read it: whole numbers without exponent (Helm reads YAML numbers as floats). */}}
{{- define "trunner.number" -}}
{{- if eq (float64 .) (floor .) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* Name and key of the Secret holding the OpsLevel API token; fails unless exactly one source is given. */}}
{{- define "trunner.tokenSecretName" -}}
{{- if and .Values.opslevel.apiToken .Values.opslevel.existingSecret.name -}}
{{- fail "set either opslevel.apiToken or opslevel.existingSecret.name, not both" -}}
{{- else if .Values.opslevel.existingSecret.name -}}
{{- .Values.opslevel.existingSecret.name -}}
{{- else if .Values.opslevel.apiToken -}}
{{- printf "%s-api-token" (include "trunner.fullname" .) -}}
{{- else -}}
{{- fail "the OpsLevel API token is missing: set opslevel.apiToken, or opslevel.existingSecret.name to a Secret holding it" -}}
{{- end -}}
{{- end -}}

{{- define "trunner.tokenSecretKey" -}}
{{- if .Values.opslevel.existingSecret.name -}}
{{- required "opslevel.existingSecret.key must name the key of the API token in the Secret" .Values.opslevel.existingSecret.key -}}
{{- else -}}
api-token
{{- end -}}
{{- end -}}

{{/*
trunner's own shutdown deadlines after running jobs are canceled, in seconds; tests/test_helm.py ties each to
its constant in the code: a canceled job's exec stream closes (ExecTiming.close_timeout 5), its pod,
ConfigMap and PDB are deleted (CLEANUP_TIMEOUT 30), runnerUnregister (UNREGISTER_TIMEOUT 10), the scaling
Lease is released (RELEASE_TIMEOUT 5).
*/}}
{{- define "trunner.shutdownDeadlines" -}}
{{- add 5 30 10 5 -}}
{{- end -}}

{{/*
Seconds Kubernetes waits between SIGTERM and SIGKILL. After SIGTERM trunner gives running jobs shutdownGrace
seconds, then cancels them; each canceled job then closes its exec stream, deletes its objects, flushes its
log (logFlushTimeout) and reports its outcome (jobOutcomeTimeout), one after the other, while jobs do this in
parallel; then the runner unregisters and releases its Lease. The slack covers the process itself. An
explicit value below that sum would kill trunner in the middle of reporting.
*/}}
{{- define "trunner.requiredGracePeriod" -}}
{{- $r := .Values.runner -}}
{{- $sum := add (ceil $r.shutdownGrace | int64) (ceil $r.logFlushTimeout | int64) (ceil $r.jobOutcomeTimeout | int64) (include "trunner.shutdownDeadlines" . | int64) (int64 .Values.terminationGraceSlackSeconds) -}}
{{- $sum -}}
{{- end -}}

{{- define "trunner.terminationGracePeriodSeconds" -}}
{{- $required := include "trunner.requiredGracePeriod" . | int64 -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- $required -}}
{{- else if lt (int64 .Values.terminationGracePeriodSeconds) $required -}}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than trunner needs to shut down: runner.shutdownGrace + runner.logFlushTimeout + runner.jobOutcomeTimeout + %s s of trunner's own deadlines + terminationGraceSlackSeconds = %d" (int64 .Values.terminationGracePeriodSeconds) (include "trunner.shutdownDeadlines" .) $required) -}}
{{- else -}}
{{- int64 .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/*
The flags the chart sets, each with the value that sets it (as "flag=value" lines). argparse accepts any
unambiguous prefix of a long flag, so runner.extraArgs may hold no prefix of these either.
*/}}
{{- define "trunner.managedFlags" -}}
--mode=mode
--executor=(the chart runs the Kubernetes executor)
--config=jobPods.config
-c=jobPods.config
--job-pod-namespace=jobPods.namespace
--job-concurrency=runner.jobConcurrency
--shutdown-grace=runner.shutdownGrace
--log-flush-timeout=runner.logFlushTimeout
--job-outcome-timeout=runner.jobOutcomeTimeout
--job-log-buffer=runner.jobLogBuffer
--job-log-spool-size=runner.jobLogSpoolSize
--job-pod-log-max-size=runner.jobPodLogMaxSize
--job-log-spool-dir=(the chart's job-log-spool emptyDir)
--log-level=runner.logLevel
--log-format=runner.logFormat
--metrics-port=runner.metricsPort
--scaling-enabled=scaling.enabled
--runner-deployment=(the chart's Deployment)
--runner-min-replicas=scaling.minReplicas
--runner-max-replicas=scaling.maxReplicas
--job-concurrency-factor=scaling.jobConcurrencyFactor
--queue=opslevel.queue
--queues=faktory.queues
--api-url=opslevel.apiUrl
--api-token=opslevel.apiToken or opslevel.existingSecret
{{- end -}}

{{- define "trunner.checkExtraArgs" -}}
{{- $managed := include "trunner.managedFlags" . | splitList "\n" -}}
{{- range .Values.runner.extraArgs -}}
{{- $name := . | splitList "=" | first -}}
{{- range $managed -}}
{{- $flag := splitList "=" . | first -}}
{{- $use := splitList "=" . | rest | join "=" -}}
{{- if or (eq $name $flag) (and (hasPrefix "--" $name) (gt (len $name) 2) (hasPrefix $name $flag)) -}}
{{- fail (printf "runner.extraArgs: %s would override %s, which the chart sets; use %s instead" $name $flag $use) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name and key of the Secret holding the Faktory URL; fails unless exactly one source is given. */}}
{{- define "trunner.faktorySecretName" -}}
{{- if and .Values.faktory.url .Values.faktory.existingSecret.name -}}
{{- fail "set either faktory.url or faktory.existingSecret.name, not both" -}}
{{- else if .Values.faktory.existingSecret.name -}}
{{- .Values.faktory.existingSecret.name -}}
{{- else if .Values.faktory.url -}}
{{- printf "%s-faktory" (include "trunner.fullname" .) -}}
{{- else -}}
{{- fail "mode faktory needs the Faktory URL: set faktory.url, or faktory.existingSecret.name to a Secret holding it" -}}
{{- end -}}
{{- end -}}

{{- define "trunner.faktorySecretKey" -}}
{{- if .Values.faktory.existingSecret.name -}}
{{- required "faktory.existingSecret.key must name the key of the Faktory URL in the Secret" .Values.faktory.existingSecret.key -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* Name and key of the ConfigMap holding the CA bundle; empty when there is none. */}}
{{- define "trunner.caBundleConfigMap" -}}
{{- if and .Values.caBundle.pem .Values.caBundle.existingConfigMap.name -}}
{{- fail "set either caBundle.pem or caBundle.existingConfigMap.name, not both" -}}
{{- else if .Values.caBundle.existingConfigMap.name -}}
{{- .Values.caBundle.existingConfigMap.name -}}
{{- else if .Values.caBundle.pem -}}
{{- printf "%s-ca" (include "trunner.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "trunner.caBundleKey" -}}
{{- if .Values.caBundle.existingConfigMap.name -}}
{{- required "caBundle.existingConfigMap.key must name the key of the bundle in the ConfigMap" .Values.caBundle.existingConfigMap.key -}}
{{- else -}}
ca-bundle.crt
{{- end -}}
{{- end -}}

{{/* Checks on values that would otherwise produce a runner that fails at start. */}}
{{- define "trunner.validate" -}}
{{- include "trunner.checkExtraArgs" . -}}
{{- if and (eq .Values.mode "faktory") .Values.scaling.enabled -}}
{{- fail "scaling.enabled works in mode api only (the replica count comes from the OpsLevel API)" -}}
{{- end -}}
{{- if lt (int64 .Values.runner.jobConcurrency) 1 -}}
{{- fail "runner.jobConcurrency must be at least 1" -}}
{{- end -}}
{{- if .Values.scaling.enabled -}}
{{- if lt (int64 .Values.scaling.minReplicas) 1 -}}
{{- fail "scaling.minReplicas must be at least 1 (the leader that scales up runs in a runner pod)" -}}
{{- end -}}
{{- if lt (int64 .Values.scaling.maxReplicas) (int64 .Values.scaling.minReplicas) -}}
{{- fail "scaling.maxReplicas must be at least scaling.minReplicas" -}}
{{- end -}}
{{- end -}}
{{- if hasKey .Values.jobPods.config "namespace" -}}
{{- fail "set the job pod namespace with jobPods.namespace, not jobPods.config.namespace" -}}
{{- end -}}
{{- include "trunner.checkJobServiceAccount" . -}}
{{- end -}}

{{/*
The runner container's resources: memory follows from the jobs it runs at once and their batch size
(README, Sizing) unless set in resources.
*/}}
{{- define "trunner.resources" -}}
{{- $resources := deepCopy (.Values.resources | default dict) -}}
{{- $perJob := add (mul 5 (int64 .Values.runner.jobPodLogMaxSize)) 4194304 -}}
{{- $request := add 67108864 (mul (int64 .Values.runner.jobConcurrency) $perJob) -}}
{{- $requests := get $resources "requests" | default dict -}}
{{- if not (hasKey $requests "memory") -}}
{{- $_ := set $requests "memory" $request -}}
{{- end -}}
{{- $limits := get $resources "limits" | default dict -}}
{{- if not (hasKey $limits "memory") -}}
{{- $_ := set $limits "memory" (mul 2 $request) -}}
{{- end -}}
{{- $_ := set $resources "requests" $requests -}}
{{- $_ := set $resources "limits" $limits -}}
{{- toYaml $resources -}}
{{- end -}}
