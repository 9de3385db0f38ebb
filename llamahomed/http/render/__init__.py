"""Renderers: a Generation's typed events in each dialect's wire format.

``native``: LlamaHome's lines (NDJSON for /api/v1/stream, the same objects on the WebSocket);
``sse``: OpenAI's server-sent events. An error after the first byte is rendered by the
renderer of the stream it happened in, nowhere else.
"""
