"""Ingests: Falco's http_output (HTTP JSON) and Falco's gRPC output stream."""
