{{- define "gcprobe.labels" -}}
app.kubernetes.io/name: gcprobe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gcprobe.selector" -}}
app.kubernetes.io/name: gcprobe
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
