"""Model workers: the protocol, the worker process, its engines, and the daemon-side pool."""
