"""Config of the Kubernetes enrichment: where the API server is, what the pod cache keeps, how long it waits."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from router.config.base import StrictModel


class KubernetesConfig(StrictModel):
    """Kubernetes enrichment from a pod cache fed by list + watch (off unless ``enabled``)."""

    enabled: bool = Field(default=False, description="Enrich alerts with pod, namespace and owner metadata.")
    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig file to use outside a cluster; unset means in-cluster (service account token).",
    )
    context: str | None = Field(default=None, description="kubeconfig context to use instead of current-context.")
    service_account_dir: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount"),
        description="Directory of the in-cluster token and ca.crt.",
    )
    node_name: str | None = Field(
        default=None, description="Watch only the pods of this node; overrides node_name_env."
    )
    node_name_env: str = Field(
        default="NODE_NAME",
        description="Environment variable with the node name (Downward API spec.nodeName); unset or empty "
        "means every pod of the cluster is watched.",
    )
    token_refresh_s: float = Field(
        default=60.0, gt=0, description="How often the bearer token file is re-read, because bound tokens rotate."
    )
    request_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of a list or get request.")
    watch_timeout_s: int = Field(
        default=300, ge=10, description="timeoutSeconds asked of the API server for one watch request."
    )
    backoff_initial_s: float = Field(default=0.5, gt=0, description="First delay before reconnecting a watch.")
    backoff_max_s: float = Field(default=30.0, gt=0, description="Largest delay between watch reconnections.")
    deleted_grace_s: float = Field(
        default=120.0, ge=0, description="How long a deleted pod stays in the cache for late alerts."
    )
    pod_wait_s: float = Field(
        default=0.2,
        ge=0,
        le=5,
        description="How long an alert waits for a pod the watch has not delivered yet (only while the watch is up).",
    )
    resolve_owners: bool = Field(
        default=True, description="Resolve ReplicaSet to Deployment and Job to CronJob with cached GET requests."
    )
    owner_lookups_per_s: float = Field(default=5.0, gt=0, description="Rate limit of owner GET requests.")
    watch_namespaces: bool = Field(default=True, description="Cache namespaces to add namespace labels.")
    labels: list[str] = Field(
        default_factory=lambda: ["*"], description="Pod and namespace label keys to copy (shell globs)."
    )
    annotations: list[str] = Field(default_factory=list, description="Pod annotation keys to copy (shell globs).")
    max_keys: int = Field(default=32, ge=0, description="Largest number of labels (and of annotations) copied per pod.")
    max_value_chars: int = Field(
        default=256,
        ge=8,
        description="Longest label or annotation value copied; a longer one is cut, ends in '…' and is listed "
        "under enrichment.k8s.truncated.",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> KubernetesConfig:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_initial_s ({self.backoff_initial_s}) is larger than backoff_max_s ({self.backoff_max_s}); "
                "lower backoff_initial_s or raise backoff_max_s"
            )
        return self
