"""ASGI side of the gateway: scope building, the per-request cycle, and lifespan."""
