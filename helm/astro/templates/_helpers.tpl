{{/* The services of the platform, in one place. */}}
{{- define "astro.services" -}}
coordinator generator verifier registry
{{- end -}}

{{- define "astro.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "astro.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "astro.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "astro.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "astro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "astro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "astro.redisUrl" -}}
{{- if .Values.redis.url -}}
{{- .Values.redis.url -}}
{{- else -}}
{{- printf "redis://%s-redis:6379/0" (include "astro.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "astro.authSecretName" -}}
{{- default (printf "%s-auth" (include "astro.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* gRPC address of a service inside the cluster. */}}
{{- define "astro.address" -}}
{{- $svc := index .root.Values .name -}}
{{- printf "%s-%s:%v" (include "astro.fullname" .root) .name $svc.port -}}
{{- end -}}
