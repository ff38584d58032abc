"""The policy engine: allow-list, dedup and folding, internal alert handling and correlation.

``match`` is the expression language every part shares; ``engine`` loads policy files, swaps them
atomically on reload and runs as a pipeline stage. docs/policy.md describes the YAML and the
annotations the outputs read.
"""
