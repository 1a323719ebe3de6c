{{- define "semantics.funcs" -}}{{ dict "x" 1 | toJson }}{{- end }}
