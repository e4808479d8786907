{{/*
Names are fixed by the mesh's contract with its controller (the controller looks up
`mesh-gateway`, `mesh-ca`, `mesh-root-ca`, ... by these names), so they do not depend on the
release name: install the chart once per cluster.
*/}}

{{/* The cluster's name; values.schema.json has already checked it is a DNS label. */}}
{{- define "mesh.clusterName" -}}
{{- required "cluster.name is required: this cluster's name in the mesh, a DNS label such as us-east (--set cluster.name=us-east)" .Values.cluster.name -}}
{{- end -}}

{{/* The region: cluster.region, or the cluster name. */}}
{{- define "mesh.region" -}}
{{- .Values.cluster.region | default (include "mesh.clusterName" .) -}}
{{- end -}}

{{/* The image reference of both components. */}}
{{- define "mesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The Secret holding the CA: an existing one, or the one the controller creates. */}}
{{- define "mesh.caSecret" -}}
{{- .Values.ca.existingSecret | default "mesh-ca" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "mesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: mesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mesh
mesh.dev/cluster: {{ include "mesh.clusterName" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "mesh.selectorLabels" -}}
app.kubernetes.io/name: mesh
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of a component's objects. */}}
{{- define "mesh.componentLabels" -}}
{{ include "mesh.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The pod-level scheduling fields of a component; call with its values. */}}
{{- define "mesh.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The Corefile stanza sending clusterset.local to the mesh DNS at .ip (README.md shows the
same text). No cache: the mesh's answers carry short TTLs of their own. */}}
{{- define "mesh.corednsStanza" -}}
clusterset.local:53 {
    errors
    forward . {{ .ip }}:53
}
{{- end -}}
