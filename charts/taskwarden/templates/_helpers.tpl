{{/* Chart name, overridable. */}}
{{- define "taskwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: the release name when it already says "taskwarden". */}}
{{- define "taskwarden.fullname" -}}
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

{{- define "taskwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "taskwarden.labels" -}}
helm.sh/chart: {{ include "taskwarden.chart" . }}
{{ include "taskwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskwarden
{{- end -}}

{{- define "taskwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "taskwarden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The webhook Service; the operator points its webhook configurations at it (443 -> 9443). */}}
{{- define "taskwarden.webhookServiceName" -}}
{{- default (include "taskwarden.fullname" .) .Values.webhook.service.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskwarden.metricsServiceName" -}}
{{- printf "%s-metrics" (include "taskwarden.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskwarden.issuer" -}}
{{- default (printf "https://%s.%s.svc" (include "taskwarden.webhookServiceName" .) .Release.Namespace) .Values.issuer -}}
{{- end -}}

{{- define "taskwarden.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Cluster-wide unless watchNamespaces is set. */}}
{{- define "taskwarden.clusterwide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}
