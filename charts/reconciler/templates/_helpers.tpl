{{/* The labels of every object: as the kustomize base writes them, plus commonLabels. */}}
{{- define "reconciler.labels" -}}
app.kubernetes.io/name: reconciler
app.kubernetes.io/part-of: reconciler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels of the Roles and RoleBindings in sites' namespaces (k8s/overlays/extra-namespace). */}}
{{- define "reconciler.siteLabels" -}}
app.kubernetes.io/part-of: reconciler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The ConfigMap of sites.toml, named as kustomize's configMapGenerator names it:
reconciler-sites-<hash>, the hash being the first 10 hex digits of the SHA-256 of the JSON of
{data, kind, name} with 0 1 3 a e written g h k m t. (kustomize's hasher looks the name up at a
path it does not find, so "name" is empty in what it hashes; the same here.) A new sites.toml
is a new name, so a new pod template: the pods restart on it.
*/}}
{{- define "reconciler.sitesConfigMap" -}}
{{- if .Values.sites.existingConfigMap -}}
{{ .Values.sites.existingConfigMap }}
{{- else -}}
{{- $json := dict "data" (dict "sites.toml" .Values.sites.toml) "kind" "ConfigMap" "name" "" | toJson -}}
{{- $hash := sha256sum $json | trunc 10 | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t" -}}
reconciler-sites-{{ $hash }}
{{- end -}}
{{- end }}

{{- define "reconciler.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{ .Values.image.repository }}:{{ $tag }}{{ with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}
