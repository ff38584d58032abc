"""falco-router: receives Falco alerts, enriches them, applies policy and delivers them to every output."""

__version__ = "0.1.0"
