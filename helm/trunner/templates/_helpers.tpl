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
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "trunner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trunner.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "trunner.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
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
Seconds Kubernetes waits between SIGTERM and SIGKILL. After SIGTERM trunner gives running jobs shutdownGrace
seconds, then cancels them; each canceled job then flushes its log (logFlushTimeout) and reports its outcome
(jobOutcomeTimeout), one after the other, while jobs do this in parallel. The margin covers job pod clean-up and
the runner's own exit. An explicit value below that sum would kill trunner in the middle of reporting.
*/}}
{{- define "trunner.requiredGracePeriod" -}}
{{- $r := .Values.runner -}}
{{- $sum := add (ceil $r.shutdownGrace | int64) (ceil $r.logFlushTimeout | int64) (ceil $r.jobOutcomeTimeout | int64) (int64 .Values.terminationGraceMarginSeconds) -}}
{{- $sum -}}
{{- end -}}

{{- define "trunner.terminationGracePeriodSeconds" -}}
{{- $required := include "trunner.requiredGracePeriod" . | int64 -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- $required -}}
{{- else if lt (int64 .Values.terminationGracePeriodSeconds) $required -}}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than trunner needs to shut down: runner.shutdownGrace + runner.logFlushTimeout + runner.jobOutcomeTimeout + terminationGraceMarginSeconds = %d" (int64 .Values.terminationGracePeriodSeconds) $required) -}}
{{- else -}}
{{- int64 .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* Checks on values that would otherwise produce a runner that fails at start. */}}
{{- define "trunner.validate" -}}
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
{{- end -}}
