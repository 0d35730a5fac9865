{{/* Chart name, overridable. */}}
{{- define "agora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Kept short: pod names <fullname>-N become node names, which allow at
most 64 characters, and DNS labels at most 63.
*/}}
{{- define "agora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "agora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agora.labels" -}}
helm.sh/chart: {{ include "agora.chart" . }}
{{ include "agora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The headless Service: the StatefulSet's serviceName, so pods get <pod>.<service> DNS names. */}}
{{- define "agora.headlessService" -}}
{{- include "agora.fullname" . }}
{{- end }}

{{/* The headless Service's FQDN: the dns:/// seed, a DNS SAN of every node certificate. */}}
{{- define "agora.serviceFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "agora.headlessService" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "agora.certsSecret" -}}
{{- default (printf "%s-certs" (include "agora.fullname" .)) .Values.certs.secretName }}
{{- end }}

{{- define "agora.configPath" -}}
/etc/agora/node.yaml
{{- end }}
