{{/*
Shared pieces of the chart. services/jobs/values.py mirrors the names defined here (fullname,
service account, secrets, addresses) for the trainer Jobs it builds; a test keeps them equal.
*/}}

{{/* The gRPC services of the platform, in one place. */}}
{{- define "astro.services" -}}
coordinator generator verifier registry
{{- end -}}

{{- define "astro.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 32 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 32 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "astro.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* (dict "root" $ "component" NAME) */}}
{{- define "astro.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* (dict "root" $ "component" NAME): metadata labels of an object of one component. */}}
{{- define "astro.componentLabels" -}}
{{ include "astro.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* (dict "root" $ "role" astro|generator|trainer): the image of a role. */}}
{{- define "astro.image" -}}
{{- $image := index .root.Values.images .role -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* Services and trainer pods; no Kubernetes API access. */}}
{{- define "astro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "astro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The coordinator's own account: the only one bound to the trainer-Jobs Role. */}}
{{- define "astro.coordinatorServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-coordinator" (include "astro.fullname" .) -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "astro.authSecretName" -}}
{{- default (printf "%s-auth" (include "astro.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "astro.hfSecretName" -}}
{{- default (printf "%s-hf-token" (include "astro.fullname" .)) .Values.hfToken.existingSecret -}}
{{- end -}}

{{- define "astro.hfTokenEnabled" -}}
{{- if or .Values.hfToken.existingSecret .Values.hfToken.token -}}true{{- end -}}
{{- end -}}

{{/* The runs volume's claim (services/jobs/values.py runs_claim mirrors it). */}}
{{- define "astro.runsClaimName" -}}
{{- default (printf "%s-runs" (include "astro.fullname" .)) .Values.runs.persistence.existingClaim -}}
{{- end -}}

{{- define "astro.datasetsClaimName" -}}
{{- default (printf "%s-datasets" (include "astro.fullname" .)) .Values.datasets.existingClaim -}}
{{- end -}}

{{- define "astro.redisSecretName" -}}
{{- default (printf "%s-redis-url" (include "astro.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{/* REDIS_URL for pods that use Redis: the bundled server, or the URL from a Secret. */}}
{{- define "astro.redisEnv" -}}
- name: REDIS_URL
{{- if .Values.redis.enabled }}
  value: {{ printf "redis://%s-redis:6379/0" (include "astro.fullname" .) | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ include "astro.redisSecretName" . }}
      key: {{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}
{{- end -}}

{{/* gRPC address of a service inside the cluster. (dict "root" $ "name" NAME) */}}
{{- define "astro.address" -}}
{{- $svc := index .root.Values .name -}}
{{- printf "%s-%s:%v" (include "astro.fullname" .root) .name $svc.port -}}
{{- end -}}

{{/* The restricted Pod Security Standard, pod level. (dict "user" U "group" G "fsGroup" F) */}}
{{- define "astro.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security Standard, container level; the root filesystem is read-only. */}}
{{- define "astro.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment of every ASTRO container: a writable HOME and cache on /tmp (the root
filesystem is read-only), unbuffered logs, the auth token file for outgoing calls. */}}
{{- define "astro.commonEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: PYTHONUNBUFFERED
  value: "1"
{{- if .Values.auth.enabled }}
- name: ASTRO_AUTH__TOKEN_FILE
  value: /var/run/secrets/astro/token
{{- end }}
{{- end -}}

{{/* Pod-level fields shared by the service Deployments. (dict "root" $ "svc" VALUES) */}}
{{- define "astro.podScheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Volumes every ASTRO pod has: its config, /tmp, the data dir, the auth token. */}}
{{- define "astro.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/astro
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/astro
{{- if .Values.auth.enabled }}
- name: auth
  mountPath: /var/run/secrets/astro
  readOnly: true
{{- end }}
{{- end -}}

{{/* (dict "root" $ "name" NAME) */}}
{{- define "astro.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "astro.fullname" .root }}-{{ .name }}
- name: tmp
  emptyDir: {}
{{- if .root.Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "astro.authSecretName" .root }}
    items:
      - key: {{ .root.Values.auth.secretKey }}
        path: token
{{- end }}
{{- end -}}

{{/* The gRPC and metrics ports of a service container. (the service's values) */}}
{{- define "astro.containerPorts" -}}
- name: grpc
  containerPort: {{ .port }}
- name: metrics
  containerPort: {{ .metricsPort }}
{{- end -}}

{{/* Readiness and liveness over grpc.health.v1. (dict "svc" VALUES "service" HEALTH-NAME) */}}
{{- define "astro.probes" -}}
readinessProbe:
  grpc:
    port: {{ .svc.port }}
    {{- with .service }}
    service: {{ . }}
    {{- end }}
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  grpc:
    port: {{ .svc.port }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{/* The ServiceConfig YAML of a service (mounted at /etc/astro/config.yaml).
(dict "root" $ "name" NAME "settings" MAP) */}}
{{- define "astro.serviceConfig" -}}
{{- $svc := index .root.Values .name -}}
host: 0.0.0.0
port: {{ $svc.port }}
metrics_port: {{ $svc.metricsPort }}
grace_seconds: {{ .root.Values.common.graceSeconds }}
max_message_bytes: {{ int64 .root.Values.common.maxMessageBytes }}
log_level: {{ .root.Values.common.logLevel }}
data_dir: /var/lib/astro
{{- if .root.Values.auth.enabled }}
auth:
  token_file: /var/run/secrets/astro/token
{{- end }}
settings:
  {{- toYaml .settings | nindent 2 }}
{{- end -}}

{{/* ConfigMap, Service and PodDisruptionBudget of a service.
(dict "root" $ "name" NAME "settings" MAP ["files" MAP of more ConfigMap files]) */}}
{{- define "astro.serviceObjects" -}}
{{- $svc := index .root.Values .name }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "astro.fullname" .root }}-{{ .name }}
  labels:
    {{- include "astro.componentLabels" (dict "root" .root "component" .name) | nindent 4 }}
data:
  config.yaml: |
    {{- include "astro.serviceConfig" . | nindent 4 }}
  {{- range $file, $content := .files }}
  {{ $file }}: |
    {{- $content | nindent 4 }}
  {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "astro.fullname" .root }}-{{ .name }}
  labels:
    {{- include "astro.componentLabels" (dict "root" .root "component" .name) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "astro.selectorLabels" (dict "root" .root "component" .name) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $svc.port }}
      targetPort: grpc
      appProtocol: grpc
    - name: metrics
      port: {{ $svc.metricsPort }}
      targetPort: metrics
{{- include "astro.pdb" (dict "root" .root "name" .name "pdb" $svc.podDisruptionBudget) }}
{{- end -}}

{{/* (dict "root" $ "name" COMPONENT "pdb" VALUES) */}}
{{- define "astro.pdb" -}}
{{- if .pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "astro.fullname" .root }}-{{ .name }}
  labels:
    {{- include "astro.componentLabels" (dict "root" .root "component" .name) | nindent 4 }}
spec:
  {{- if hasKey .pdb "minAvailable" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "astro.selectorLabels" (dict "root" .root "component" .name) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Resources with a GPU limit added. (dict "root" $ "resources" MAP "gpus" N) */}}
{{- define "astro.gpuResources" -}}
{{- $resources := deepCopy (default dict .resources) -}}
{{- if gt (int .gpus) 0 -}}
{{- $limits := default dict $resources.limits -}}
{{- $_ := set $limits .root.Values.gpuResourceName (int .gpus) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{/* NetworkPolicy pieces (networkpolicy.yaml). */}}
{{- define "astro.peer" -}}
- podSelector:
    matchLabels:
      {{- include "astro.selectorLabels" . | nindent 6 }}
{{- end -}}

{{- define "astro.grpcTo" -}}
- to:
    {{- include "astro.peer" (dict "root" .root "component" .name) | nindent 4 }}
  ports:
    - port: {{ (index .root.Values .name).port }}
      protocol: TCP
{{- end -}}

{{- define "astro.redisTo" -}}
{{- if .Values.redis.enabled }}
- to:
    {{- include "astro.peer" (dict "root" . "component" "redis") | nindent 4 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else }}
- ports:
    - port: {{ .Values.networkPolicy.externalRedis.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.externalRedis.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "astro.dnsTo" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{- define "astro.metricsFrom" -}}
- from:
    {{- toYaml .root.Values.networkPolicy.metricsScrapers | nindent 4 }}
  ports:
    - port: {{ (index .root.Values .name).metricsPort }}
      protocol: TCP
{{- end -}}
