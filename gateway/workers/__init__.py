"""Worker kinds: the async worker (asyncio, ASGI) and the sync worker (blocking, WSGI)."""
