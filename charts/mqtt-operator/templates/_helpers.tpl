{{/* The release's name for everything it creates. */}}
{{- define "mqtt-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mqtt-operator.serviceAccountName" -}}
{{- default (include "mqtt-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/*
Selector labels. app.kubernetes.io/name must stay "mqtt-operator": broker
NetworkPolicies admit their admin port only from pods with that label in the
operator's namespace.
*/}}
{{- define "mqtt-operator.selectorLabels" -}}
app.kubernetes.io/name: mqtt-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mqtt-operator.labels" -}}
{{ include "mqtt-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
