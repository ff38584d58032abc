"""Test helpers: real protocol peers (Kafka broker, Slack and webhook servers, Falco stand-ins) on 127.0.0.1."""
