"""The worker process side: everything here runs inside ``python -m llamahomed.engine.worker``."""
