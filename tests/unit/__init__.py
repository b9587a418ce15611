"""Specifications that need no worker process: Lua scripts, envelopes, configuration, payloads,
deployment files. Each runs against the session's private redis-server at most; ``make
test-unit`` runs them alone in seconds."""
