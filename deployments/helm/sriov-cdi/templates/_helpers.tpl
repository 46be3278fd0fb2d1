{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "sriov-cdi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name, with the chart name unless it already holds it. */}}
{{- define "sriov-cdi.fullname" -}}
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

{{- define "sriov-cdi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sriov-cdi.labels" -}}
helm.sh/chart: {{ include "sriov-cdi.chart" . }}
{{ include "sriov-cdi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels the DaemonSet and the Service select pods by; never change them in an upgrade. */}}
{{- define "sriov-cdi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sriov-cdi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sriov-cdi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sriov-cdi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sriov-cdi.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The base directories of vhost-user pools, as a JSON list: hostPaths.vhostUser plus
vhostUser.baseDir of every pool in `config` (when configFile is empty), each once.
*/}}
{{- define "sriov-cdi.vhostUserDirs" -}}
{{- $dirs := list -}}
{{- range .Values.hostPaths.vhostUser -}}
{{- $dirs = append $dirs . -}}
{{- end -}}
{{- if and (not .Values.configFile) .Values.config -}}
{{- range .Values.config.pools -}}
{{- if and (kindIs "map" .) (hasKey . "vhostUser") .vhostUser -}}
{{- if .vhostUser.baseDir -}}
{{- $dirs = append $dirs .vhostUser.baseDir -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $dirs | uniq | toJson -}}
{{- end -}}

{{/* The pool config as an object, from configFile (YAML or JSON) or config. */}}
{{- define "sriov-cdi.configObject" -}}
{{- if .Values.configFile }}
{{- .Values.configFile | fromYaml | toJson }}
{{- else }}
{{- .Values.config | toJson }}
{{- end }}
{{- end }}

{{/* The DRA driver name: the config's top-level resourcePrefix. */}}
{{- define "sriov-cdi.draDriver" -}}
{{- $c := include "sriov-cdi.configObject" . | fromJson }}
{{- default "sriov-cdi.io" $c.resourcePrefix }}
{{- end }}

{{/*
The binary the containers run: /usr/bin/sriov-cdi-dp (built with -tags nodra: no client-go,
about half the resident memory) unless a pool has api: dra, or plugin.binary says otherwise.
*/}}
{{- define "sriov-cdi.binary" -}}
{{- $b := .Values.plugin.binary | default "auto" -}}
{{- if eq $b "full" -}}
/usr/bin/sriov-cdi
{{- else if eq $b "dp" -}}
/usr/bin/sriov-cdi-dp
{{- else if eq $b "auto" -}}
{{- if include "sriov-cdi.draPools" . -}}
/usr/bin/sriov-cdi
{{- else -}}
/usr/bin/sriov-cdi-dp
{{- end -}}
{{- else -}}
{{- fail (printf "plugin.binary %q: use auto, full or dp" $b) -}}
{{- end -}}
{{- end }}

{{/* The names of the pools with api: dra, comma-separated ("" when none). */}}
{{- define "sriov-cdi.draPools" -}}
{{- $c := include "sriov-cdi.configObject" . | fromJson }}
{{- $names := list }}
{{- range $c.pools }}
{{- if eq (toString .api) "dra" }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}
{{- join "," $names }}
{{- end }}
