"""Falco rules files: validation, the rollout into Falco's rules folder, and the hot reload of Falco."""
