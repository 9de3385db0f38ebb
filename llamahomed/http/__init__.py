"""The HTTP API: routes, middlewares and handlers."""
