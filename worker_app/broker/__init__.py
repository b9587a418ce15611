"""The broker core: how messages and job records live in Redis, and every atomic change to them.

The protocol (keys, states, transitions and the script that performs each) is written down in
``docs/protocol.md``; this package is its code:

- ``scripts/*.lua`` and :mod:`.registry`: the scripts, one per transition, loaded in one place;
- :mod:`.envelope`: what a message envelope is (the fetch script applies the same rule);
- :mod:`.publish`: the one publisher every way of sending a job goes through;
- :mod:`.fetch`: the worker's fetch loop, a small state machine;
- :mod:`.qos` and :mod:`.transport`: the thin binding to kombu's Redis transport;
- :mod:`.sweep`: restoring a lost worker's messages and finishing records left without one.

It may import ``worker_app.config`` and ``worker_app.keys`` and nothing else of the package
above it.
"""
