{{/*
Helpers of the archwarden chart. Every helper is prefixed with "archwarden." so that a parent
chart's helpers of the same name never collide. Names are truncated to 63 characters (the
DNS-1123 label limit that Kubernetes applies to many name fields) without a trailing dash.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "archwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, or the release name followed by the chart
name unless the release name already contains it.
*/}}
{{- define "archwarden.fullname" -}}
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

{{/*
A name derived from the full name with a suffix; the full name is shortened so that the suffix
always survives the 63-character limit.
Usage: include "archwarden.suffixed" (list . "ca")
*/}}
{{- define "archwarden.suffixed" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "archwarden.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{/* The leader Lease's name: config.leaderElection.leaseName, else <fullname>-leader. */}}
{{- define "archwarden.leaseName" -}}
{{- .Values.config.leaderElection.leaseName | default (include "archwarden.suffixed" (list . "leader")) }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "archwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: immutable once a Deployment exists, so they carry only the name and the
instance.
*/}}
{{- define "archwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "archwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "archwarden.labels" -}}
helm.sh/chart: {{ include "archwarden.chart" . }}
{{ include "archwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ include "archwarden.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: archwarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the pods run as, and that the RBAC bindings target. */}}
{{- define "archwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "archwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "archwarden.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest pins the image. */}}
{{- define "archwarden.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "archwarden.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Where the serving certificate lives: a chart or cert-manager Secret, or the user's. */}}
{{- define "archwarden.tlsSecretName" -}}
{{- default (include "archwarden.suffixed" (list . "tls")) .Values.tls.existingSecret }}
{{- end }}

{{/*
ConfigMap holding the CA bundle that verifies the API server's client certificate (key ca.crt).
*/}}
{{- define "archwarden.clientCAConfigMap" -}}
{{- .Values.webhook.clientAuth.existingConfigMap | default (include "archwarden.suffixed" (list . "client-ca")) }}
{{- end }}

{{/*
Namespaces archwarden never sees: kube-system, the release namespace (so that archwarden's own
pods are admitted even while no replica is up, whatever the failurePolicy) and the listed ones.
Rendered as a JSON list; used by the ConfigMap and archwarden.namespaceSelector alike.
*/}}
{{- define "archwarden.excludedNamespaces" -}}
{{- concat (list "kube-system" .Release.Namespace) .Values.config.excludedNamespaces | uniq | toJson }}
{{- end }}

{{/*
The namespaceSelector of everything that acts on pods at admission: the webhooks and the
scheduling-gate policy. One definition, so that the policy never gates a pod in a namespace the
webhooks do not see (archwarden would never release it) nor misses one they check. The excluded
namespaces (see archwarden.excludedNamespaces), ANDed with webhook.matchExpressions. Rendered as
a YAML mapping.
*/}}
{{- define "archwarden.namespaceSelector" -}}
{{- $excluded := dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (include "archwarden.excludedNamespaces" . | fromJsonArray) }}
{{- toYaml (dict "matchExpressions" (prepend .Values.webhook.matchExpressions $excluded)) }}
{{- end }}

{{/*
The API a MutatingAdmissionPolicy needs, as .Capabilities.APIVersions names it: served by the
cluster (helm install/upgrade ask its discovery), or given to an offline render with
--api-versions.
*/}}
{{- define "archwarden.mutatingPolicyAPI" -}}
admissionregistration.k8s.io/v1/MutatingAdmissionPolicy
{{- end }}

{{/*
schedulingGates.mode resolved: policy, webhook or off, never auto. Every template that depends on
the mode (ConfigMap, policy, RBAC, uninstall hook) uses this, so they cannot disagree. mode
policy without the API is refused by archwarden.validate.
*/}}
{{- define "archwarden.schedulingGatesMode" -}}
{{- $mode := .Values.schedulingGates.mode }}
{{- if eq $mode "auto" }}
{{- ternary "policy" "webhook" (.Capabilities.APIVersions.Has (include "archwarden.mutatingPolicyAPI" .)) }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/*
Where archwarden reads Cluster API node groups, as config.capacity.clusterAPI says: "cluster"
(namespaces ["*"]), "namespaces" (the named ones alone), "none" (disabled, or no namespace
named: archwarden reads none, so RBAC grants none). RBAC and NOTES use this, so they cannot
disagree.
*/}}
{{- define "archwarden.clusterAPIScope" -}}
{{- $capi := .Values.config.capacity.clusterAPI }}
{{- if not (and $capi.enabled $capi.namespaces) }}
{{- "none" }}
{{- else if has "*" $capi.namespaces }}
{{- "cluster" }}
{{- else }}
{{- "namespaces" }}
{{- end }}
{{- end }}

{{/*
Stop the render with a message. helm lint renders with `fail` turned into a log line and goes
on, so a lint would pass values that every install rejects; the line written after the call
(reached only under lint) is invalid YAML, which makes `helm lint` report the template as an
error. Usage: include "archwarden.fail" "message"
*/}}
{{- define "archwarden.fail" -}}
{{- fail . }}
{{ printf "archwarden-invalid-values: %q" . }}
: [lint stops here]
{{- end }}

{{/*
Values that cannot be combined. The schema checks each value alone; these checks span values.
Included once, from the ConfigMap template (always rendered).
*/}}
{{- define "archwarden.validate" -}}
{{- if and .Values.certManager.enabled .Values.tls.existingSecret }}
{{- include "archwarden.fail" "certManager.enabled and tls.existingSecret cannot be combined: the serving certificate has one owner (cert-manager, or your Secret with tls.caBundle)" }}
{{- end }}
{{- if and .Values.tls.existingSecret (not .Values.tls.caBundle) }}
{{- include "archwarden.fail" "tls.existingSecret needs tls.caBundle (base64 PEM of the CA that signed it): the chart owns the webhook configurations and must write their caBundle" }}
{{- end }}
{{- if and .Values.tls.caBundle (not .Values.tls.existingSecret) }}
{{- include "archwarden.fail" "tls.caBundle is only used with tls.existingSecret; the chart-generated and cert-manager certificates bring their own CA" }}
{{- end }}
{{- if and .Values.certManager.enabled .Values.tls.caBundle }}
{{- include "archwarden.fail" "certManager.enabled and tls.caBundle cannot be combined: cert-manager injects the caBundle" }}
{{- end }}
{{- if ge (float64 .Values.webhook.budgetSeconds) (float64 .Values.webhook.timeoutSeconds) }}
{{- include "archwarden.fail" (printf "webhook.budgetSeconds (%v) must be below webhook.timeoutSeconds (%v): archwarden must answer before the API server gives up" .Values.webhook.budgetSeconds .Values.webhook.timeoutSeconds) }}
{{- end }}
{{- with .Values.config.kube }}
{{- if le (float64 .watchIdleSeconds) (float64 .watchSeconds) }}
{{- include "archwarden.fail" (printf "config.kube.watchIdleSeconds (%v) must be above config.kube.watchSeconds (%v): a quiet watch hears nothing until its bookmark or its end" .watchIdleSeconds .watchSeconds) }}
{{- end }}
{{- end }}
{{- if and (gt (int .Values.shutdownDelaySeconds) 0) (ge (int .Values.shutdownDelaySeconds) (int .Values.terminationGracePeriodSeconds)) }}
{{- include "archwarden.fail" (printf "shutdownDelaySeconds (%v) must be below terminationGracePeriodSeconds (%v): the pod is killed when the grace period ends" .Values.shutdownDelaySeconds .Values.terminationGracePeriodSeconds) }}
{{- end }}
{{- if and (not .Values.config.leaderElection.enabled) (gt (int .Values.replicaCount) 1) }}
{{- include "archwarden.fail" (printf "config.leaderElection.enabled false with replicaCount %v: every replica would audit, write reports and post the same Events; keep election on, or run one replica" .Values.replicaCount) }}
{{- end }}
{{- with .Values.config.leaderElection }}
{{- if not (gt (float64 .leaseDurationSeconds) (float64 .renewDeadlineSeconds)) }}
{{- include "archwarden.fail" (printf "config.leaderElection.leaseDurationSeconds (%v) must be above renewDeadlineSeconds (%v): a leader must stop before another may start" .leaseDurationSeconds .renewDeadlineSeconds) }}
{{- end }}
{{- if not (gt (float64 .renewDeadlineSeconds) (float64 .retryPeriodSeconds)) }}
{{- include "archwarden.fail" (printf "config.leaderElection.renewDeadlineSeconds (%v) must be above retryPeriodSeconds (%v): a leader must have more than one try at renewing" .renewDeadlineSeconds .retryPeriodSeconds) }}
{{- end }}
{{- end }}
{{- if eq (int .Values.webhook.port) (int .Values.metrics.port) }}
{{- include "archwarden.fail" "webhook.port and metrics.port must differ" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- include "archwarden.fail" "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) }}
{{- include "archwarden.fail" "podDisruptionBudget.enabled needs minAvailable or maxUnavailable" }}
{{- end }}
{{- with .Values.credentialProviders }}
{{- if .enabled }}
{{- if and .config .hostConfig }}
{{- include "archwarden.fail" "credentialProviders: set config or hostConfig, not both" }}
{{- end }}
{{- if not (or .config .hostConfig) }}
{{- include "archwarden.fail" "credentialProviders.enabled needs config (the CredentialProviderConfig) or hostConfig (the node's file)" }}
{{- end }}
{{- if and .hostBinDir .image.repository }}
{{- include "archwarden.fail" "credentialProviders: set hostBinDir or image.repository, not both" }}
{{- end }}
{{- if not (or .hostBinDir .image.repository) }}
{{- include "archwarden.fail" "credentialProviders.enabled needs the plugin binaries: hostBinDir (a directory on the node) or image.repository" }}
{{- end }}
{{- if and .image.repository (not .image.tag) }}
{{- include "archwarden.fail" "credentialProviders.image.tag is required with image.repository" }}
{{- end }}
{{- range (.config.providers | default list) }}
{{- if and (hasKey . "tokenAttributes") (not $.Values.credentialProviders.serviceAccountTokens) }}
{{- include "archwarden.fail" (printf "credentialProviders: provider %v has tokenAttributes: set credentialProviders.serviceAccountTokens to grant serviceaccounts/token create" .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.config.globalPullSecret (eq .Values.rbac.pullSecrets.scope "none") }}
{{- include "archwarden.fail" "config.globalPullSecret needs rbac.pullSecrets.scope cluster or namespaces: archwarden must be allowed to read it" }}
{{- end }}
{{- if and .Values.rbac.pullSecrets.namespaces (ne .Values.rbac.pullSecrets.scope "namespaces") }}
{{- include "archwarden.fail" "rbac.pullSecrets.namespaces is only used with rbac.pullSecrets.scope=namespaces" }}
{{- end }}
{{- with .Values.webhook.clientAuth }}
{{- if and .enabled (not .caBundle) (not .existingConfigMap) }}
{{- include "archwarden.fail" "webhook.clientAuth.enabled needs caBundle or existingConfigMap: the CA that signs the API server's client certificate" }}
{{- end }}
{{- if and .caBundle .existingConfigMap }}
{{- include "archwarden.fail" "webhook.clientAuth: set caBundle or existingConfigMap, not both" }}
{{- end }}
{{- if and (not .enabled) (or .caBundle .existingConfigMap .names) }}
{{- include "archwarden.fail" "webhook.clientAuth.caBundle, existingConfigMap and names are only used with webhook.clientAuth.enabled" }}
{{- end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.webhookFrom) }}
{{- include "archwarden.fail" "networkPolicy.enabled needs networkPolicy.webhookFrom (the API server's addresses as ipBlock peers): an empty from would admit everyone" }}
{{- end }}
{{- if and .Values.hostNetwork (has 10250 (list (int .Values.webhook.port) (int .Values.metrics.port))) }}
{{- include "archwarden.fail" "hostNetwork with webhook.port or metrics.port 10250: that node port is the kubelet's (10250 is for pod networking, e.g. GKE private clusters)" }}
{{- end }}
{{- if and (eq .Values.schedulingGates.mode "policy") (not (.Capabilities.APIVersions.Has (include "archwarden.mutatingPolicyAPI" .))) }}
{{- include "archwarden.fail" (printf "schedulingGates.mode=policy needs the API server to serve %s (Kubernetes 1.36 or later): use mode auto or webhook on this cluster (an offline render needs --api-versions %s)" (include "archwarden.mutatingPolicyAPI" .) (include "archwarden.mutatingPolicyAPI" .)) }}
{{- end }}
{{- if and (eq .Values.podAntiAffinity "hard") .Values.affinity }}
{{- include "archwarden.fail" "podAntiAffinity=hard is ignored when affinity is set: put the anti-affinity into affinity, or set podAntiAffinity=none" }}
{{- end }}
{{- end }}

{{/*
A webhook's matchConditions: call archwarden for an UPDATE only when the pod template changed.
Usage: include "archwarden.matchConditions" (list $ operations templateField)
*/}}
{{- define "archwarden.matchConditions" -}}
{{- $root := index . 0 }}
{{- $field := index . 2 }}
{{- if and $root.Values.webhook.matchConditions $field (has "UPDATE" (index . 1)) }}
    matchConditions:
      - name: pod-template-changed
        expression: {{ printf "request.operation != 'UPDATE' || object.%s != oldObject.%s" $field $field | quote }}
{{- end }}
{{- end }}

{{/*
Node selector expressions of the platforms the image runs on: Linux, and image.architectures
(none: any architecture). Rendered as a YAML list; every pod of the chart requires them.
*/}}
{{- define "archwarden.platformExpressions" -}}
{{- $platform := list (dict "key" "kubernetes.io/os" "operator" "In" "values" (list "linux")) }}
{{- with .Values.image.architectures }}
{{- $platform = append $platform (dict "key" "kubernetes.io/arch" "operator" "In" "values" .) }}
{{- end }}
{{- toYaml $platform }}
{{- end }}
