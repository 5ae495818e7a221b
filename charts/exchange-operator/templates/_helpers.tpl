{{- define "exchange-operator.name" -}}exchange-operator{{- end -}}

{{- define "exchange-operator.labels" -}}
app.kubernetes.io/name: exchange-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: exchange-platform
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "exchange-operator.selector" -}}
app.kubernetes.io/name: exchange-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "exchange-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
