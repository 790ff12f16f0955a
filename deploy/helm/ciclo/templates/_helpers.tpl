{{/* Names. */}}
{{- define "ciclo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ciclo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name: <fullname>-<component>. Call with (list $ "ingest"). */}}
{{- define "ciclo.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "ciclo.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "ciclo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels. */}}
{{- define "ciclo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ciclo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ciclo.labels" -}}
helm.sh/chart: {{ include "ciclo.chart" . }}
{{ include "ciclo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ciclo
{{- end -}}

{{/* A component's selector labels. Call with (list $ "ingest"). */}}
{{- define "ciclo.componentSelectorLabels" -}}
{{ include "ciclo.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ciclo.componentLabels" -}}
{{ include "ciclo.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The image reference. */}}
{{- define "ciclo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ciclo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ciclo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the services read: existingSecret, or the chart's own. */}}
{{- define "ciclo.secretName" -}}
{{- default (include "ciclo.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* The Secret the migration hook reads: existingSecret, or a hook Secret created just before it. */}}
{{- define "ciclo.migrationSecretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else -}}
{{- printf "%s-migrate" (include "ciclo.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
Non-secret settings as YAML key: value lines. The ConfigMap and the migration Job both use it, so
they never disagree.
*/}}
{{- define "ciclo.configEnv" -}}
CICLO_ENV: {{ .Values.config.env | quote }}
CICLO_HOST: "0.0.0.0"
CICLO_PORT: "8000"
CICLO_AUTO_MIGRATE: "false"
CICLO_DEMO: "false"
CICLO_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
CICLO_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
CICLO_BUS_URL: {{ .Values.bus.url | quote }}
CICLO_BUS_PARTITIONS: {{ .Values.bus.partitions | quote }}
CICLO_BUS_REPLICATION_FACTOR: {{ .Values.bus.replicationFactor | quote }}
CICLO_KAFKA_IDEMPOTENCE: {{ .Values.bus.kafkaIdempotence | quote }}
CICLO_EMAIL_PROVIDER: {{ .Values.email.provider | quote }}
CICLO_EMAIL_FROM: {{ .Values.email.from | quote }}
CICLO_EMAIL_FROM_NAME: {{ .Values.email.fromName | quote }}
CICLO_SENDGRID_BASE_URL: {{ .Values.email.sendgrid.baseUrl | quote }}
CICLO_PUBLIC_URL: {{ .Values.email.publicUrl | quote }}
CICLO_AMBIGUOUS_POLICY: {{ .Values.config.ambiguousPolicy | quote }}
{{- range $key, $value := .Values.config.extraEnv }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
Checks that need more than one value (values.schema.json checks each value on its own). Rendered
by every template that depends on them, so `helm template` and `helm install` both stop here.
*/}}
{{- define "ciclo.validate" -}}
{{- $partitions := int .Values.bus.partitions -}}
{{- if gt (int .Values.journey.replicaCount) $partitions -}}
{{- fail (printf "journey.replicaCount (%d) must not exceed bus.partitions (%d): a journey replica beyond the partition count owns no partition and does nothing" (int .Values.journey.replicaCount) $partitions) -}}
{{- end -}}
{{- if and (not .Values.dispatch.autoscaling.enabled) (gt (int .Values.dispatch.replicaCount) $partitions) -}}
{{- fail (printf "dispatch.replicaCount (%d) must not exceed bus.partitions (%d)" (int .Values.dispatch.replicaCount) $partitions) -}}
{{- end -}}
{{- if and .Values.dispatch.autoscaling.enabled (gt (int .Values.dispatch.autoscaling.maxReplicas) $partitions) -}}
{{- fail (printf "dispatch.autoscaling.maxReplicas (%d) must not exceed bus.partitions (%d)" (int .Values.dispatch.autoscaling.maxReplicas) $partitions) -}}
{{- end -}}
{{- range $component := list "ingest" "dispatch" -}}
{{- $as := (index $.Values $component).autoscaling -}}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%d) must not exceed maxReplicas (%d)" $component (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.config.env "production") (eq .Values.email.provider "sink") -}}
{{- fail "config.env=production needs a real email.provider, not the local sink (the services refuse to start)" -}}
{{- end -}}
{{- if and (eq .Values.config.env "production") (or (not (hasPrefix "https://" .Values.email.publicUrl)) (regexMatch "^https://(localhost|127\\.0\\.0\\.1|\\[::1\\])([:/]|$)" .Values.email.publicUrl)) -}}
{{- fail "config.env=production needs email.publicUrl to be the https:// address recipients reach (one-click unsubscribe links must be HTTPS; the services refuse to start)" -}}
{{- end -}}
{{- if not .Values.existingSecret -}}
{{- if not .Values.database.url -}}
{{- fail "set database.url or existingSecret (a Secret with CICLO_DATABASE_URL)" -}}
{{- end -}}
{{- if and (eq .Values.config.env "production") (not .Values.email.unsubscribeSecret) -}}
{{- fail "config.env=production needs email.unsubscribeSecret or existingSecret (with CICLO_UNSUBSCRIBE_SECRET): it signs unsubscribe links" -}}
{{- end -}}
{{- if and (eq .Values.email.provider "sendgrid") (not .Values.email.sendgrid.apiKey) -}}
{{- fail "email.provider=sendgrid needs email.sendgrid.apiKey or existingSecret (with CICLO_SENDGRID_API_KEY)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) -}}
{{- fail "ingress.enabled needs at least one host in ingress.hosts" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.serviceMonitor.enabled (not .Values.networkPolicy.metricsFrom) -}}
{{- fail "networkPolicy.metricsFrom must name who scrapes /metrics when serviceMonitor is enabled (e.g. the monitoring namespace)" -}}
{{- end -}}
{{- end -}}

{{/* Pod-level settings shared by the Deployments. Call with (list $ "ingest"). */}}
{{- define "ciclo.podScheduling" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $root.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "ciclo.componentSelectorLabels" (list $root $component) | nindent 8 }}
{{- end }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Environment, resources and security of the migration Job's containers. */}}
{{- define "ciclo.migrationEnv" -}}
env:
{{- range $key, $value := (include "ciclo.configEnv" . | fromYaml) }}
  - name: {{ $key }}
    value: {{ $value | toString | quote }}
{{- end }}
envFrom:
  - secretRef:
      name: {{ include "ciclo.migrationSecretName" . }}
resources:
  {{- toYaml .Values.migrations.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}
