{{/* The labels every object carries (as the kustomize base's `labels`). */}}
{{- define "podmutate.labels" -}}
app.kubernetes.io/name: podmutate
app.kubernetes.io/part-of: podmutate
{{- end }}

{{/* What selects the webhook's pods. */}}
{{- define "podmutate.selector" -}}
app.kubernetes.io/component: webhook
app.kubernetes.io/name: podmutate
{{- end }}

{{- define "podmutate.selfManaged" -}}
{{- if eq .Values.certificates.mode "self-managed" }}true{{ else if eq .Values.certificates.mode "cert-manager" }}{{ else }}{{ fail "certificates.mode: self-managed or cert-manager" }}{{ end }}
{{- end }}
