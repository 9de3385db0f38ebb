"""Chat templates: a model's ``tokenizer.chat_template`` (Jinja) rendered in a sandbox.

The template comes from the GGUF file, so it is treated as untrusted code: it runs in Jinja's
immutable sandbox (no attribute access to Python internals, no mutation of the messages, bounded
``range``), with the helpers Hugging Face templates expect (``raise_exception``,
``strftime_now``, ``bos_token``, ``eos_token``, ``add_generation_prompt``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llamahomed.core.errors import InvalidRequest, LlamaHomeError
from llamahomed.registry.store import ModelEntry

__all__ = ["ChatTemplate", "ChatTemplateError"]


class ChatTemplateError(InvalidRequest):
    """The template refused these messages (``raise_exception``) or failed while rendering."""


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return time.strftime(fmt)


class ChatTemplate:
    """One compiled template; ``render`` turns OpenAI-style messages into a prompt string."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "",
                 strip_bos: bool = True) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        try:
            self._template = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise LlamaHomeError(f"this model's chat template does not compile: {exc}") from exc
        self.source = source
        self.bos_token, self.eos_token = bos_token, eos_token
        self._strip_bos = strip_bos

    def render(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True,
               **extra: Any) -> str:
        """The prompt for ``messages``.

        With ``strip_bos`` (the tokenizer adds BOS itself) a leading BOS written by the template
        is removed, so the sequence does not start with two.
        """
        try:
            text = self._template.render(messages=list(messages), bos_token=self.bos_token,
                                         eos_token=self.eos_token,
                                         add_generation_prompt=add_generation_prompt, **extra)
        except _TemplateRaised as exc:
            raise ChatTemplateError(f"the model's chat template refused the messages: {exc}",
                                    details={"errors": [{"field": "messages",
                                                         "message": str(exc)}]}) from exc
        except (TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise ChatTemplateError(f"the model's chat template failed on these messages: {exc}",
                                    details={"errors": [{"field": "messages",
                                                         "message": str(exc)}]}) from exc
        if self._strip_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token):]
        return text


class TemplateCache:
    """Compiled chat templates by model file (compiling Gemma's takes a few milliseconds)."""

    def __init__(self, limit: int = 16) -> None:
        self._limit = limit
        self._templates: dict[tuple[str, str, str, bool], ChatTemplate] = {}

    def get(self, entry: ModelEntry, info: dict[str, Any]) -> ChatTemplate:
        source = entry.info.chat_template or ""
        key = (source, str(info.get("bos_token", "")), str(info.get("eos_token", "")),
               bool(info.get("add_bos", True)))
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= self._limit:
                self._templates.pop(next(iter(self._templates)))
            template = ChatTemplate(source, bos_token=key[1], eos_token=key[2], strip_bos=key[3])
            self._templates[key] = template
        return template
