{{/*
Names, labels and the few decisions several templates share.
*/}}

{{- define "imagepush.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name of the release's objects: the release name, with the chart name
appended unless the release name already contains it.
*/}}
{{- define "imagepush.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "imagepush.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "imagepush.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagepush.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "imagepush.labels" -}}
helm.sh/chart: {{ include "imagepush.chart" . }}
{{ include "imagepush.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "imagepush.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imagepush.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The controller image: repository, then @digest when pinned, else :tag (default appVersion).
*/}}
{{- define "imagepush.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The worker Jobs' image: the controller's own image unless worker.image says otherwise.
*/}}
{{- define "imagepush.workerImage" -}}
{{- default (include "imagepush.image" .) .Values.worker.image }}
{{- end }}

{{/*
The worker pods' defaults, as the controller's --worker-defaults file reads them.
*/}}
{{- define "imagepush.workerDefaults" -}}
{{- $w := .Values.worker }}
{{- $pull := list }}
{{- range $w.imagePullSecrets }}
{{- $pull = append $pull (dict "name" (toString .)) }}
{{- end }}
{{- $out := dict "resources" ($w.resources | default dict) "tolerations" ($w.tolerations | default list) "nodeSelector" ($w.nodeSelector | default dict) "imagePullSecrets" $pull "env" ($w.env | default list) "labels" ($w.labels | default dict) "annotations" ($w.annotations | default dict) }}
{{- with $w.affinity }}
{{- $_ := set $out "affinity" . }}
{{- end }}
{{- with $w.priorityClassName }}
{{- $_ := set $out "priorityClassName" . }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
"true" when the replicas must elect a leader: always with more than one replica.
*/}}
{{- define "imagepush.leaderElection" -}}
{{- if or .Values.controller.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
The rules of the controller's role: exactly the API calls src/controller/ makes
(tests/chart.rs checks them against the calls seen in an end-to-end run).
*/}}
{{- define "imagepush.controllerRules" -}}
# Watch ImagePush objects (the controller's reflector lists and watches them), and read one
# afresh before starting a worker, so a cache that lags never starts a Job twice.
# Patch: once per object whose status an earlier version of the controller wrote with a merge patch, its
# managedFields (moved to the server-side apply entry; a subresource write cannot change them).
- apiGroups: ["imagepush.dev"]
  resources: ["imagepushes"]
  verbs: ["list", "watch", "get", "patch"]
# Write status, conditions and progress (server-side apply of the status subresource).
- apiGroups: ["imagepush.dev"]
  resources: ["imagepushes/status"]
  verbs: ["patch"]
# One worker Job per generation and attempt: watched into a cache (owned objects), created; deleted when a newer generation supersedes it or its worker can never start; read
# when a create answers that the name is taken (to see whether it is ours).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "delete", "get"]
# The worker pods' state (watched into a cache), progress lines and push report.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Why a worker does not start: the Job controller's FailedCreate and kubelet's FailedMount
# warnings (listed by the object's uid, only while the worker has no pod or a pending one).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
# Whether the claim a source names exists (metadata-only GET).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
{{- if .Values.rbac.checkSecrets }}
# Whether the credentials Secret exists (metadata-only GET; the controller never reads the
# data, but RBAC cannot grant metadata alone: see rbac.checkSecrets in values.yaml).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
# Events about ImagePush objects (kube-runtime's Recorder creates them and patches repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
