{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "raft-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name of the release's objects. */}}
{{- define "raft-operator.fullname" -}}
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

{{- define "raft-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: the e2e suite finds the operator by app.kubernetes.io/name=raft-operator. */}}
{{- define "raft-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "raft-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "raft-operator.labels" -}}
helm.sh/chart: {{ include "raft-operator.chart" . }}
{{ include "raft-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "raft-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "raft-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "raft-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "raft-operator.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecarImage.repository (default .Chart.AppVersion .Values.sidecarImage.tag) }}
{{- end }}

{{/*
Namespaces the operator watches, as a JSON list: watchNamespaces (plus the older single
watchNamespace), else the release namespace. Empty when clusterWide (every namespace).
*/}}
{{- define "raft-operator.watchNamespaces" -}}
{{- $list := list -}}
{{- if not .Values.clusterWide -}}
{{- range .Values.watchNamespaces }}{{ $list = append $list . }}{{ end -}}
{{- with .Values.watchNamespace }}{{ $list = append $list . }}{{ end -}}
{{- if not $list }}{{ $list = list .Release.Namespace }}{{ end -}}
{{- end -}}
{{- $list | uniq | toJson -}}
{{- end }}

{{/* The selector labels as key=value,key=value (RAFT_OPERATOR_POD_SELECTOR). */}}
{{- define "raft-operator.podSelector" -}}
{{- $pairs := list -}}
{{- range $k, $v := include "raft-operator.selectorLabels" . | fromYaml }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end -}}
{{- join "," $pairs -}}
{{- end }}

{{/* Name of the leader election Lease. */}}
{{- define "raft-operator.leaseName" -}}
{{- default (include "raft-operator.fullname" .) .Values.leaderElection.leaseName -}}
{{- end }}

{{/* What the operator may do in a watched namespace (or everywhere, when clusterWide). */}}
{{- define "raft-operator.rules" -}}
- apiGroups: ["consensus.unrdf.io"]
  resources: ["raftclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["consensus.unrdf.io"]
  resources: ["raftclusters/status"]
  verbs: ["get", "patch"]
- apiGroups: ["consensus.unrdf.io"]
  resources: ["raftclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
