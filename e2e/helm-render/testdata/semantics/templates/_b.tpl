{{- define "semantics.word" -}}from-b{{- end }}
