"""The broker core: how messages and job records live in Redis, and every atomic change to them.

The protocol (keys, states, transitions and the script that performs each) is written down in
``docs/protocol.md``; this package is its code:

- ``scripts/*.lua`` and :mod:`.registry`: the scripts, one per transition, loaded in one place;
- :mod:`.envelope`: what a message envelope is (the fetch script applies the same rule);
- :mod:`.publish`: the one publisher every way of sending a job goes through;
- :mod:`.fetch`: the worker's fetch loop, a small state machine;
- :mod:`.qos` and :mod:`.transport`: the thin binding to kombu's Redis transport;
- :mod:`.sweep`: restoring a lost worker's messages and finishing records left without one;
- :mod:`.delays`: parking messages whose ETA is far ahead, and releasing them when due;
- :mod:`.queues`: the configured queues: their weighted order, routing and figures.

It may import the root modules (config, errors, keys, redis_client) and nothing else of the
package.
"""
