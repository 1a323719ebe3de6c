{{- define "semantics.word" -}}from-a{{- end }}
{{- define "semantics.labels" -}}
app: {{ .Chart.Name }}
chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}
