{{/* Helpers of the absa chart. */}}

{{/* Chart name, overridable. */}}
{{- define "absa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Release-scoped name every object starts with: 52 characters at most, so that the longest
suffix (-migrations) still gives a 63-character name (the limit of a Service's name).
*/}}
{{- define "absa.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* name-version for the helm.sh/chart label. */}}
{{- define "absa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component; called with (dict "ctx" $ "component" "api"). */}}
{{- define "absa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "absa.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component; called like absa.selectorLabels. */}}
{{- define "absa.labels" -}}
helm.sh/chart: {{ include "absa.chart" .ctx }}
{{ include "absa.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: absa
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{/* An image reference; called with (dict "ctx" $ "image" .Values.api.image). */}}
{{- define "absa.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- if .ctx.Values.image.registry -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "absa.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "absa.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secrets holding the two URLs: created by you, never by the chart. */}}
{{- define "absa.databaseSecretName" -}}
{{- required "database.existingSecret is required: the name of a Secret you created with the Postgres URL (the chart reads credentials from Secrets only)" .Values.database.existingSecret -}}
{{- end -}}

{{- define "absa.amqpSecretName" -}}
{{- required "amqp.existingSecret is required: the name of a Secret you created with the RabbitMQ URL (the chart reads credentials from Secrets only)" .Values.amqp.existingSecret -}}
{{- end -}}

{{/*
The TOML file of .Values.config: top-level keys first, then one table per section.
Values go through toJson, which is valid TOML for strings, numbers and booleans and
writes integers without a fraction (Helm holds numbers as float64, which plain
{{ }} would print as 5.36870912e+08). A null value leaves its key out.
*/}}
{{- define "absa.configToml" -}}
# absa configuration rendered by the Helm chart from .Values.config.
# ABSA_<SECTION>__<KEY> environment variables override it (database.url, amqp.url, http.bind).
{{- range $key, $value := .Values.config }}
{{- if not (or (kindIs "map" $value) (kindIs "invalid" $value)) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $section, $settings := .Values.config }}
{{- if kindIs "map" $settings }}

[{{ $section }}]
{{- range $key, $value := $settings }}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where the ConfigMap is mounted and the file ABSA_CONFIG points at. */}}
{{- define "absa.configDir" -}}/etc/absa{{- end -}}

{{/* Env of every role: the config file and the two URLs from their Secrets. */}}
{{- define "absa.env" -}}
- name: ABSA_CONFIG
  value: {{ include "absa.configDir" . }}/absa.toml
- name: ABSA_DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "absa.databaseSecretName" . }}
      key: {{ .Values.database.secretKey }}
- name: ABSA_AMQP__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "absa.amqpSecretName" . }}
      key: {{ .Values.amqp.secretKey }}
{{- end -}}

{{/* Pod annotations: a checksum of the configuration (pods roll when it changes) and podAnnotations. */}}
{{- define "absa.podAnnotations" -}}
checksum/config: {{ include "absa.configToml" . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The config volume, mounted by every role. */}}
{{- define "absa.configVolume" -}}
- name: config
  configMap:
    name: {{ include "absa.fullname" . }}-config
{{- end -}}

{{- define "absa.configVolumeMount" -}}
- name: config
  mountPath: {{ include "absa.configDir" . }}
  readOnly: true
{{- end -}}

{{/*
Spread one component's pods over nodes (topologySpread in values); called like
absa.selectorLabels, at the pod spec's indentation.
*/}}
{{- define "absa.topologySpread" -}}
{{- if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ .ctx.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ .ctx.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "absa.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/*
The scheduler's and the workers' metrics server: the env that binds it, then (at the
container's indentation) its port and the probes on it. /healthz: the process answers;
/readyz: a worker consumes its queues, the scheduler runs.
*/}}
{{- define "absa.metricsEnv" -}}
- name: ABSA_METRICS__BIND
  value: "0.0.0.0:{{ .Values.metrics.port }}"
{{- end -}}

{{- define "absa.metricsPortAndProbes" -}}
ports:
  - name: metrics
    containerPort: {{ .Values.metrics.port }}
    protocol: TCP
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  {{- toYaml .Values.metrics.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  {{- toYaml .Values.metrics.readinessProbe | nindent 2 }}
{{- end -}}
