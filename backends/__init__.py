"""Backends: each turns a Graph into an Artifact (installed as `mlpc.backends`)."""
