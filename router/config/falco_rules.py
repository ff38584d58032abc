"""Config of the Falco rules rollout: where rules come from, where Falco reads them, how to reload it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from router.config.base import StrictModel


class FalcoRulesConfig(StrictModel):
    """Validate the rules files of a source folder, deploy them into Falco's rules folder and reload Falco.

    Off by default: the router touches Falco's files and process only when this section names them.
    """

    enabled: bool = Field(default=False, description="Watch source_dir and roll its rules files out to Falco.")
    source_dir: Path | None = Field(
        default=None,
        description="Folder of candidate rules files, usually a mounted ConfigMap (required when enabled).",
    )
    target_dir: Path | None = Field(
        default=None,
        description="Folder Falco loads rules from (listed in Falco's rules_files); the router owns its .yaml files.",
    )
    base_files: list[Path] = Field(
        default_factory=list,
        description="Rules files Falco loads before target_dir, such as falco_rules.yaml; references resolve here.",
    )
    poll_interval_s: float = Field(default=1.0, gt=0, le=60, description="How often source_dir is hashed.")
    debounce_s: float = Field(
        default=2.0, ge=0, le=300, description="Quiet time after the last change before the files count as one rollout."
    )
    falco_binary: Path | None = Field(
        default=None, description="falco executable used for `falco -V`; when unset, `falco` is looked up on PATH."
    )
    falco_validate: bool = Field(
        default=True, description="Also validate with `falco -V` when a falco binary is configured or on PATH."
    )
    falco_config: Path | None = Field(
        default=None, description="falco.yaml passed to `falco -V` with -c (Falco loads its config and plugins first)."
    )
    validate_timeout_s: float = Field(default=60.0, gt=0, description="Time limit for one `falco -V` run.")
    pid_file: Path | None = Field(
        default=Path("/var/run/falco.pid"), description="File holding Falco's pid (falco -P/--pidfile)."
    )
    scan_proc: bool = Field(
        default=True,
        description="When the pid file gives no live Falco, look in /proc for the process (shareProcessNamespace).",
    )
    process_name: str = Field(
        default="falco", min_length=1, max_length=15, description="Process name (/proc/PID/comm) Falco runs under."
    )
    confirm_window_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="How long after the SIGHUP a hot restart failure alert fails the reload.",
    )
    falco_metrics_url: str | None = Field(
        default=None,
        description="Falco's Prometheus URL (http://127.0.0.1:8765/metrics); its rules hash must change on reload.",
    )

    @model_validator(mode="after")
    def _folders_when_enabled(self) -> FalcoRulesConfig:
        problems = []
        if self.enabled and self.source_dir is None:
            problems.append("source_dir is required when enabled is true: set it to the mounted rules folder")
        if self.enabled and self.target_dir is None:
            problems.append(
                "target_dir is required when enabled is true: set it to a folder listed in Falco's rules_files"
            )
        if self.source_dir is not None and self.source_dir == self.target_dir:
            problems.append("source_dir and target_dir must be different folders")
        if self.falco_metrics_url is not None and not self.falco_metrics_url.startswith(("http://", "https://")):
            problems.append(f"falco_metrics_url must be an http:// or https:// URL, got {self.falco_metrics_url!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self
