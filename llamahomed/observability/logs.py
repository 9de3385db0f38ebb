"""structlog, configured once by the CLI: JSON lines off a terminal, readable text on one.

Everything goes through one pipeline on stderr: our structlog loggers, and the stdlib loggers of
aiohttp, asyncio and ``llamahome.monitoring`` through ``ProcessorFormatter`` (their ``extra``
fields kept). llama.cpp writes to the model worker's stderr; the daemon reads it and logs each
line as a ``worker_stderr`` event (debug, or warning when it reports an error). One summary line
per request comes from ``api/metrics.py``. Prompts, completions and tokens are never logged,
except prompts with the ``log_prompts`` debug setting.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and the stdlib (aiohttp, asyncio) through one pipeline on stderr."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(),
                           *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our one summary line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
