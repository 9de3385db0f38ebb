"""Ollama's API (docs/Ollama.md): the routes Ollama's clients call, over the one generation
pipeline, with LlamaHome's auth, limits and metrics.

``generate`` (generate, chat, embed), ``models`` (liveness, version, tags, show, ps),
``manage`` (pull, delete, copy, create), ``blobs`` (uploads for create), ``names`` (Ollama's
``model:tag`` onto the store's ids), ``schemas`` (the request bodies). Errors on these routes
are Ollama's ``{"error": "message"}`` (the route table's ``errors="ollama"``).
"""

from llamahomed.http.handlers.ollama import blobs, generate, manage, models

__all__ = ["blobs", "generate", "manage", "models"]
