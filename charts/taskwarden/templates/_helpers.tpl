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

{{/*
Who provides the webhook serving certificate and the caBundle:
  certManager  cert-manager issues it (certManager.enabled) and its CA injector sets caBundle;
  chart        Helm generates a CA and a certificate (webhook.certificate.generate, the default);
  operator     the operator generates them and registers the webhook configurations itself.
*/}}
{{- define "taskwarden.caSource" -}}
{{- if .Values.certManager.enabled -}}certManager
{{- else if .Values.webhook.certificate.generate -}}chart
{{- else -}}operator
{{- end -}}
{{- end -}}

{{/* The operator reads its serving certificate from this Secret by name (webhooks.TLS_SECRET). */}}
{{- define "taskwarden.tlsSecretName" -}}taskwarden-webhook-tls{{- end -}}

{{- define "taskwarden.caSecretName" -}}
{{- printf "%s-webhook-ca" (include "taskwarden.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of both webhook configurations; the operator registers (and replaces) `taskwarden`. */}}
{{- define "taskwarden.webhookConfigurationName" -}}
{{- if eq (include "taskwarden.caSource" .) "operator" -}}taskwarden
{{- else -}}{{ include "taskwarden.fullname" . }}
{{- end -}}
{{- end -}}

{{/* SANs the operator requires of its serving certificate (webhooks.tls_hosts). */}}
{{- define "taskwarden.webhookDNSNames" -}}
{{- $svc := include "taskwarden.webhookServiceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson -}}
{{- end -}}

{{/*
CEL for matchConditions: the pod references a Secret whose name ends in -credential, the same
references admission.credential_refs checks (secret and projected volumes; env secretKeyRef and
envFrom secretRef of init, regular and ephemeral containers).
*/}}
{{- define "taskwarden.celReferencesCredential" -}}
{{- $s := "'-credential'" -}}
{{- $parts := list (printf "(has(object.spec.volumes) && object.spec.volumes.exists(v, (has(v.secret) && has(v.secret.secretName) && v.secret.secretName.endsWith(%s)) || (has(v.projected) && has(v.projected.sources) && v.projected.sources.exists(p, has(p.secret) && has(p.secret.name) && p.secret.name.endsWith(%s)))))" $s $s) -}}
{{- range list "initContainers" "containers" "ephemeralContainers" -}}
{{- $parts = append $parts (printf "(has(object.spec.%s) && object.spec.%s.exists(c, (has(c.env) && c.env.exists(e, has(e.valueFrom) && has(e.valueFrom.secretKeyRef) && has(e.valueFrom.secretKeyRef.name) && e.valueFrom.secretKeyRef.name.endsWith(%s))) || (has(c.envFrom) && c.envFrom.exists(e, has(e.secretRef) && has(e.secretRef.name) && e.secretRef.name.endsWith(%s)))))" . . $s $s) -}}
{{- end -}}
{{- join " || " $parts -}}
{{- end -}}

{{- define "taskwarden.celAnnotated" -}}
has(object.metadata.annotations) && 'taskwarden.dev/task' in object.metadata.annotations
{{- end -}}

{{/*
"true" when AgentTask admission is decided in CEL where it can be (admission.mode): `cel`, or
`auto` on an API server that serves admissionregistration.k8s.io/v1 Mutating- and
ValidatingAdmissionPolicy (Kubernetes 1.36+). Empty: webhooks only.
*/}}
{{- define "taskwarden.admissionInProcess" -}}
{{- $mode := .Values.admission.mode -}}
{{- $api := "admissionregistration.k8s.io/v1/" -}}
{{- $served := and (.Capabilities.APIVersions.Has (printf "%sMutatingAdmissionPolicy" $api)) (.Capabilities.APIVersions.Has (printf "%sValidatingAdmissionPolicy" $api)) -}}
{{- if or (eq $mode "cel") (and (eq $mode "auto") $served) -}}true{{- end -}}
{{- end -}}
