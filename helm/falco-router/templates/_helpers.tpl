{{- define "falco-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "falco-router.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "falco-router.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "falco-router.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "falco-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "falco-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "falco-router.labels" -}}
{{ include "falco-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "falco-router.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "falco-router.serviceAccountName" -}}
{{- if eq .Values.mode "sidecar" }}
{{- .Values.sidecar.falcoServiceAccount.name }}
{{- else if .Values.serviceAccount.create }}
{{- default (include "falco-router.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The router config as YAML. The HTTP listener defaults to every interface on .Values.port because
the kubelet probes and (standalone) the Service reach the pod IP; an explicit listen must use the
same port, or the probes and the Service would point at nothing.
*/}}
{{- define "falco-router.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $ingest := default dict (get $config "ingest") -}}
{{- $http := default dict (get $ingest "http") -}}
{{- $listen := get $http "listen" | default "" -}}
{{- if $listen -}}
{{- if not (hasSuffix (printf ":%v" .Values.port) $listen) -}}
{{- fail (printf "config.ingest.http.listen is %q but port is %v: use the same port in both, such as 0.0.0.0:%v" $listen .Values.port .Values.port) -}}
{{- end -}}
{{- else -}}
{{- $_ := set $http "listen" (printf "0.0.0.0:%v" .Values.port) -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") (eq .Values.sidecar.ingest "grpc") -}}
{{- $grpc := default dict (get $ingest "grpc") -}}
{{- $_ := set $grpc "enabled" true -}}
{{- if not (hasKey $grpc "address") -}}
{{- $_ := set $grpc "address" (printf "unix://%s/falco.sock" .Values.sidecar.runDir) -}}
{{- end -}}
{{- $_ := set $ingest "grpc" $grpc -}}
{{- end -}}
{{- $_ := set $ingest "http" $http -}}
{{- $_ := set $config "ingest" $ingest -}}
{{- toYaml $config }}
{{- end }}

{{/*
Security context of the router container. Signalling Falco (root) from another container needs
CAP_KILL, and Kubernetes grants added capabilities to the effective set only for UID 0, so the
signalling variant runs as root with every capability but KILL dropped.
*/}}
{{- define "falco-router.securityContext" -}}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.signalFalco }}
{{- $context := deepCopy .Values.securityContext }}
{{- $_ := set $context "runAsNonRoot" false }}
{{- $_ := set $context "runAsUser" 0 }}
{{- $_ := set $context "runAsGroup" 0 }}
{{- $_ := set $context "capabilities" (dict "drop" (list "ALL") "add" (list "KILL")) }}
{{- toYaml $context }}
{{- else }}
{{- toYaml .Values.securityContext }}
{{- end }}
{{- end }}

{{/* The router container, shared by the StatefulSet and the Falco sidecar snippet. */}}
{{- define "falco-router.container" -}}
name: falco-router
image: {{ include "falco-router.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["--config", "/etc/falco-router/config.yaml"]
ports:
  - name: router-http
    containerPort: {{ .Values.port }}
    protocol: TCP
env:
  - name: NODE_NAME
    valueFrom:
      fieldRef:
        fieldPath: spec.nodeName
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  {{- range .Values.secrets.env }}
  - name: {{ .name }}
    valueFrom:
      secretKeyRef:
        name: {{ required "secrets.existingSecret is required when secrets.env is set" $.Values.secrets.existingSecret }}
        key: {{ .key }}
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    port: router-http
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: router-http
  {{- toYaml .Values.probes.readiness | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- include "falco-router.securityContext" . | nindent 2 }}
volumeMounts:
  - name: falco-router-config
    mountPath: /etc/falco-router/config.yaml
    subPath: config.yaml
    readOnly: true
  - name: falco-router-rules-source
    mountPath: /etc/falco-router/rules
    readOnly: true
  - name: falco-router-state
    mountPath: {{ .Values.stateDir }}
  - name: falco-router-tmp
    mountPath: /tmp
  {{- if .Values.secrets.mountPath }}
  - name: falco-router-secrets
    mountPath: {{ .Values.secrets.mountPath }}
    readOnly: true
  {{- end }}
  {{- if eq .Values.mode "sidecar" }}
  - name: falco-router-rules
    mountPath: {{ .Values.sidecar.rulesDir }}
  - name: {{ include "falco-router.runVolume" . }}
    mountPath: {{ .Values.sidecar.runDir }}
  {{- end }}
{{- end }}

{{/*
Volume of Falco's run folder. With gRPC the Falco chart already mounts its own grpc-socket-dir
volume at the socket's folder, so the router mounts that one; otherwise the router adds an emptyDir.
*/}}
{{- define "falco-router.runVolume" -}}
{{- if eq .Values.sidecar.ingest "grpc" }}grpc-socket-dir{{ else }}falco-router-run{{ end }}
{{- end }}

{{/* Volumes the router container needs; the sidecar adds the ones shared with Falco. */}}
{{- define "falco-router.volumes" -}}
- name: falco-router-config
  configMap:
    name: {{ include "falco-router.fullname" . }}
- name: falco-router-rules-source
  configMap:
    name: {{ include "falco-router.fullname" . }}-rules
- name: falco-router-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.secrets.mountPath }}
- name: falco-router-secrets
  secret:
    secretName: {{ required "secrets.existingSecret is required when secrets.mountPath is set" .Values.secrets.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if eq .Values.mode "sidecar" }}
- name: falco-router-state
  emptyDir: {}
- name: falco-router-rules
  emptyDir: {}
{{- if ne .Values.sidecar.ingest "grpc" }}
- name: falco-router-run
  emptyDir: {}
{{- end }}
{{- else if not .Values.standalone.persistence.enabled }}
- name: falco-router-state
  emptyDir: {}
{{- end }}
{{- end }}
