"""HTTP API, metrics and dashboard of a running node (``[http]`` in the configuration)."""
