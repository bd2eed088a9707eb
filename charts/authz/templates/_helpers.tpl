{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authz.fullname" -}}
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

{{- define "authz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "authz.labels" -}}
helm.sh/chart: {{ include "authz.chart" . }}
{{ include "authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: authorizer
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "authz.leaseName" -}}
{{- default (printf "%s-status" (include "authz.fullname" .)) .Values.controller.leaseName }}
{{- end }}

{{- define "authz.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Modes and switches ------------------------------------------------------------------- */}}

{{- define "authz.central" -}}
{{- if eq .Values.mode "central" }}true{{ end }}
{{- end }}

{{/* The transports served (`transport`): gRPC checks, HTTP checks. */}}
{{- define "authz.grpc" -}}
{{- if ne .Values.transport "http" }}true{{ end }}
{{- end }}

{{- define "authz.httpChecks" -}}
{{- if ne .Values.transport "grpc" }}true{{ end }}
{{- end }}

{{/* The controller watches the cluster: central mode with controller.enabled. */}}
{{- define "authz.watching" -}}
{{- if and (eq .Values.mode "central") .Values.controller.enabled }}true{{ end }}
{{- end }}

{{- define "authz.rbac" -}}
{{- if and (include "authz.watching" .) .Values.rbac.create }}true{{ end }}
{{- end }}

{{/* Namespaces that need a Role: the watched ones, plus `default`, where Kubernetes puts
     events about cluster-scoped objects (ClusterJWTIssuer). Empty when watching all. */}}
{{- define "authz.roleNamespaces" -}}
{{- if .Values.controller.watchNamespaces }}
{{- $all := append .Values.controller.watchNamespaces "default" | uniq }}
{{- toJson $all }}
{{- else }}
{{- toJson list }}
{{- end }}
{{- end }}

{{/* Workers ------------------------------------------------------------------------------
     `workers` wins; else whole cores of resources.limits.cpu ("2", 2, 1.5, "1500m"), at
     least 1; else nothing (authz's default). One process per core: Python runs one thread
     of bytecode at a time per process, so more processes than cores only adds switching. */}}
{{- define "authz.workers" -}}
{{- if .Values.workers }}
{{- .Values.workers }}
{{- else }}
{{- $cpu := "" }}
{{- with .Values.resources }}{{ with .limits }}{{ with .cpu }}{{ $cpu = toString . }}{{ end }}{{ end }}{{ end }}
{{- if $cpu }}
{{- $cores := 0 }}
{{- if hasSuffix "m" $cpu }}
{{- $cores = div (trimSuffix "m" $cpu | atoi) 1000 }}
{{- else }}
{{- $cores = floor (float64 $cpu) | int }}
{{- end }}
{{- max 1 $cores }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod pieces shared by both modes ------------------------------------------------------ */}}

{{- define "authz.policyFiles" -}}
{{- $files := dict }}
{{- range $file, $content := .Values.policies }}
{{- $_ := set $files $file (kindIs "string" $content | ternary $content (toYaml $content)) }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{- define "authz.probe" -}}
{{- $timing := index . 0 }}
{{- $path := index . 1 }}
{{- $port := index . 2 -}}
httpGet:
  path: {{ $path }}
  port: {{ $port }}
{{ toYaml $timing }}
{{- end }}

{{/* Resources: `resources` as given, with a memory request and limit derived from the
     worker count where `resources` sets none: memory.requestPerWorker (limitPerWorker) per
     worker, plus memory.supervisor once when there is more than one worker. Every worker is
     a whole interpreter with its own token cache, so memory grows with the workers. */}}
{{- define "authz.resources" -}}
{{- $resources := deepCopy (.Values.resources | default dict) }}
{{- $workers := include "authz.workers" . | default "1" | int }}
{{- $supervisor := 0 }}
{{- if gt $workers 1 }}
{{- $supervisor = trimSuffix "Mi" .Values.memory.supervisor | int }}
{{- end }}
{{- range $kind, $perWorker := dict "requests" .Values.memory.requestPerWorker "limits" .Values.memory.limitPerWorker }}
{{- $section := get $resources $kind | default dict }}
{{- if not (hasKey $section "memory") }}
{{- $_ := set $section "memory" (printf "%dMi" (add (mul $workers (trimSuffix "Mi" $perWorker | int)) $supervisor)) }}
{{- end }}
{{- $_ := set $resources $kind $section }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* The helm test pod: its own name label, so the Service never selects it. */}}
{{- define "authz.testLabels" -}}
app.kubernetes.io/name: {{ include "authz.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* PromQL matchers for this release's series (what the ServiceMonitor scrapes). */}}
{{- define "authz.seriesSelector" -}}
{{- .Values.prometheusRule.seriesSelector | default (printf "namespace=%q, job=%q" .Release.Namespace (include "authz.fullname" .)) }}
{{- end }}

{{/* The Secret holding the Check port's serving certificate. */}}
{{- define "authz.tlsSecret" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "authz.fullname" .)) }}
{{- end }}

{{/* authz serve's TLS flags (central mode with tls.enabled). */}}
{{- define "authz.tlsArgs" -}}
{{- if .Values.tls.enabled }}
- --tls-cert-file=/etc/authz/tls/tls.crt
- --tls-key-file=/etc/authz/tls/tls.key
{{- if .Values.tls.clientAuth.enabled }}
{{- if .Values.tls.clientAuth.caConfigMap }}
- --tls-client-ca-file=/etc/authz/client-ca/{{ .Values.tls.clientAuth.caKey }}
{{- else }}
- --tls-client-ca-file=/etc/authz/tls/{{ .Values.tls.clientAuth.caKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The webhook's names: Deployment, Service, ServiceAccount and its certificate Secret. */}}
{{- define "authz.webhookName" -}}
{{- printf "%s-webhook" (include "authz.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authz.webhookSecret" -}}
{{- .Values.webhook.secretName | default (printf "%s-tls" (include "authz.webhookName" .)) }}
{{- end }}

{{/* Shared state and secrets ------------------------------------------------------------
     What replicas must share (Redis URLs, the DPoP nonce secret, the internal-token keys,
     the HTTP proxy secret). A secret is always a file from a Secret mounted read-only under
     /etc/authz/secrets/<volume>, never an argument or a variable: the process list and the
     pod spec show only its path. A Secret given by name and key projects that key alone. */}}

{{/* The mounted Secrets as JSON: [{volume, flag, secret, key}] (key "": the whole Secret,
     a directory). */}}
{{- define "authz.secretFiles" -}}
{{- $v := .Values }}
{{- $files := list }}
{{- with $v.httpProxySecret.name }}
{{- $files = append $files (dict "volume" "http-proxy-secret" "flag" "--http-proxy-secret-file" "secret" . "key" $v.httpProxySecret.key) }}
{{- end }}
{{- with $v.dpop.nonceSecret.name }}
{{- $files = append $files (dict "volume" "dpop-nonce-secret" "flag" "--dpop-nonce-secret-file" "secret" . "key" $v.dpop.nonceSecret.key) }}
{{- end }}
{{- with $v.dpop.replayRedis.passwordSecret.name }}
{{- $files = append $files (dict "volume" "dpop-replay-redis-password" "flag" "--dpop-replay-redis-password-file" "secret" . "key" $v.dpop.replayRedis.passwordSecret.key) }}
{{- end }}
{{- with $v.login.sessionRedis.passwordSecret.name }}
{{- $files = append $files (dict "volume" "session-redis-password" "flag" "--session-redis-password-file" "secret" . "key" $v.login.sessionRedis.passwordSecret.key) }}
{{- end }}
{{- with $v.internalTokens.keysSecret }}
{{- $files = append $files (dict "volume" "internal-token-keys" "flag" "--internal-token-keys" "secret" . "key" "") }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* The internal tokens' issuer: as given, else (central mode) the Service's ops port. */}}
{{- define "authz.internalTokenIssuer" -}}
{{- .Values.internalTokens.issuer | default (printf "http://%s.%s.svc:%v/internal" (include "authz.fullname" .) .Release.Namespace .Values.ports.http) }}
{{- end }}

{{/* authz serve's shared-state flags (both modes). */}}
{{- define "authz.stateArgs" -}}
{{- $v := .Values }}
{{- with $v.dpop.replayRedis.url }}
- {{ printf "--dpop-replay-redis=%s" . | quote }}
{{- end }}
{{- with $v.login.sessionRedis.url }}
- {{ printf "--session-redis=%s" . | quote }}
{{- end }}
{{- if $v.internalTokens.keysSecret }}
- {{ printf "--internal-token-issuer=%s" (include "authz.internalTokenIssuer" .) | quote }}
{{- end }}
{{- range include "authz.secretFiles" . | fromJsonArray }}
- {{ .flag }}=/etc/authz/secrets/{{ .volume }}{{ with .key }}/{{ . }}{{ end }}
{{- end }}
{{- end }}

{{/* Their volume mounts; (list $ "volume name prefix"). */}}
{{- define "authz.secretMounts" -}}
{{- $prefix := index . 1 }}
{{- range include "authz.secretFiles" (index . 0) | fromJsonArray }}
- name: {{ $prefix }}{{ .volume }}
  mountPath: /etc/authz/secrets/{{ .volume }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Their volumes; (list $ "volume name prefix" groupReadable). groupReadable (central
     mode with an fsGroup): mode 0440, readable by the pod's fsGroup only; else Kubernetes'
     default, since a workload's pod may have no fsGroup. */}}
{{- define "authz.secretVolumes" -}}
{{- $prefix := index . 1 }}
{{- $groupReadable := index . 2 }}
{{- range include "authz.secretFiles" (index . 0) | fromJsonArray }}
- name: {{ $prefix }}{{ .volume }}
  secret:
    secretName: {{ .secret }}
    {{- if $groupReadable }}
    defaultMode: 0440
    {{- end }}
    {{- with .key }}
    items:
      - key: {{ . }}
        path: {{ . }}
    {{- end }}
{{- end }}
{{- end }}
