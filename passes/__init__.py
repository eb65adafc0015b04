"""Built-in graph passes (installed as `mlpc.passes`)."""
