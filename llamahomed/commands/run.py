"""``llamahomed run MODEL [PROMPT]``: talk to a model through the running daemon.

With a prompt (or text on stdin) the answer streams to stdout and the command exits, so pipes
work: ``cat notes.txt | llamahomed run smollm2 "Summarize:"``. Without one, an interactive chat
with history, as ``ollama run`` has: ``/set temperature 0.2``, ``/clear``, ``/bye``; Ctrl-C
stops the answer being written (not the session), Ctrl-D or ``/bye`` ends the session.

It talks to the daemon that is already running (it starts nothing) with the token in
``$LLAMAHOME_API_KEY`` or, for the user who runs the daemon, its admin token file. A model with
a chat template chats through ``/v1/chat/completions``; a base model completes each prompt as
text through ``/v1/completions`` (no history: a base model does not take turns).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from llamahomed.commands.runtime import admin_token, base_url, running_daemon
from llamahomed.core.errors import StartupError
from llamahomed.core.settings import Settings

NOT_RUNNING = 3
HELP = """commands:
  /set temperature 0.2   also top_p, top_k, max_tokens, seed; /set system <text>
  /show                  the current settings
  /clear                 forget the conversation
  /bye                   leave (or Ctrl-D)
  \"\"\"                    start and end a multi-line message
Ctrl-C stops the answer being written."""
NUMERIC = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("run", help="chat with a model, or complete one prompt and exit",
                            parents=[common])
    parser.add_argument("model", help="model id or alias (see `llamahomed models list`)")
    parser.add_argument("prompt", nargs="*", help="the prompt; without one (and no stdin): a chat")
    parser.add_argument("--system", help="system prompt (chat models)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int, dest="max_tokens")


class ApiError(Exception):
    """The daemon answered with an error (its message is what the user reads)."""


@dataclass
class Session:
    """One conversation: where the daemon is, the model, its settings and the history."""

    url: str
    token: str | None
    model: str
    chat: bool
    options: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method="POST" if body is not None else "GET")
        try:
            return urllib.request.urlopen(request, timeout=600)  # noqa: S310 - loopback daemon
        except urllib.error.HTTPError as exc:
            raise ApiError(_error_message(exc.read(), exc.code)) from None

    def answer(self, prompt: str, write: Callable[[str], None]) -> str:
        """Stream the model's answer to ``prompt`` through ``write``; the whole answer."""
        body: dict[str, Any] = {"model": self.model, "stream": True, **self.options}
        if self.chat:
            messages = ([{"role": "system", "content": self.system}] if self.system else [])
            body["messages"] = [*messages, *self.history, {"role": "user", "content": prompt}]
            path = "/v1/chat/completions"
        else:
            body["prompt"] = prompt
            path = "/v1/completions"
        parts: list[str] = []
        with self.request(path, body) as response:
            for chunk in _events(response):
                if "error" in chunk:
                    raise ApiError(str(chunk["error"].get("message", chunk["error"])))
                for choice in chunk.get("choices", []):
                    text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                    if text:
                        parts.append(text)
                        write(text)
        return "".join(parts)


def _error_message(raw: bytes, status: int) -> str:
    try:
        error = json.loads(raw)["error"]
        return str(error.get("message") or error)
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {status}"


def _events(response: Any) -> Iterator[dict[str, Any]]:
    """The JSON objects of an SSE stream, until ``[DONE]``."""
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def open_session(args: argparse.Namespace, settings: Settings) -> Session:
    runtime = running_daemon(settings)
    if runtime is None:
        raise StartupError("llamahomed is not running; start it with `llamahomed start` "
                           "(this command starts nothing itself)")
    token = os.environ.get("LLAMAHOME_API_KEY") or admin_token(settings)
    session = Session(base_url(runtime), token, args.model, chat=False)
    try:
        with session.request(f"/api/v1/models/{urllib.parse.quote(args.model, safe='')}") as r:
            model = json.loads(r.read())
    except ApiError as exc:
        raise StartupError(str(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise StartupError(f"llamahomed does not answer at {session.url}: {exc}") from exc
    session.model = model.get("id", args.model)
    session.chat = "chat" in model.get("capabilities", [])
    session.system = args.system
    for name in ("temperature", "max_tokens"):
        if getattr(args, name) is not None:
            session.options[name] = getattr(args, name)
    return session


def run(args: argparse.Namespace, settings: Settings) -> int:
    session = open_session(args, settings)
    prompt = " ".join(args.prompt)
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        prompt = f"{prompt}\n\n{piped}" if prompt and piped.strip() else prompt or piped
    if prompt.strip():
        return one_shot(session, prompt, sys.stdout)
    return interactive(session, sys.stdin, sys.stdout)


def _writer(out: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        out.write(text)
        out.flush()
    return write


def one_shot(session: Session, prompt: str, out: TextIO) -> int:
    try:
        session.answer(prompt, _writer(out))
    except ApiError as exc:
        print(f"\nllamahomed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    out.write("\n")
    return 0


def interactive(session: Session, stdin: TextIO, out: TextIO) -> int:
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    kind = "chat" if session.chat else "base model: each prompt is completed as text, no history"
    out.write(f"{session.model} ({kind}). /? for help, /bye to leave.\n")
    while True:
        try:
            line = _read_message(out)
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\n(Ctrl-D or /bye to leave)\n")
            continue
        if not line.strip():
            continue
        if line.startswith("/"):
            if command(session, line.strip(), out):
                return 0
            continue
        try:
            reply = session.answer(line, _writer(out))
        except KeyboardInterrupt:
            out.write("\n[stopped]\n")
            continue
        except ApiError as exc:
            out.write(f"\nerror: {exc}\n")
            continue
        except (urllib.error.URLError, OSError) as exc:
            out.write(f"\nerror: the daemon went away ({exc})\n")
            return 1
        out.write("\n")
        if session.chat:
            session.history += [{"role": "user", "content": line},
                                {"role": "assistant", "content": reply}]


def _read_message(out: TextIO) -> str:
    line = input(">>> ")
    if not line.strip().startswith('"""'):
        return line
    lines = [line.strip()[3:]]
    while not lines[-1].endswith('"""'):
        lines.append(input("... "))
    lines[-1] = lines[-1][:-3]
    return "\n".join(lines).strip()


def command(session: Session, line: str, out: TextIO) -> bool:
    """Run a ``/`` command; True when the session ends."""
    word, _, rest = line.partition(" ")
    if word in ("/bye", "/exit", "/quit"):
        return True
    if word == "/clear":
        session.history.clear()
        out.write("cleared the conversation\n")
    elif word in ("/?", "/help"):
        out.write(HELP + "\n")
    elif word == "/show":
        shown = {**session.options, "system": session.system, "turns": len(session.history) // 2}
        out.write(json.dumps(shown) + "\n")
    elif word == "/set":
        name, _, value = rest.strip().partition(" ")
        out.write(_set(session, name, value.strip()) + "\n")
    else:
        out.write(f"unknown command {word}; /? for help\n")
    return False


def _set(session: Session, name: str, value: str) -> str:
    if name == "system":
        session.system = value or None
        return "system prompt set" if value else "system prompt cleared"
    kind = NUMERIC.get(name)
    if kind is None:
        return f"cannot set {name!r}; one of: system, {', '.join(NUMERIC)}"
    try:
        session.options[name] = kind(value)
    except ValueError:
        return f"{name} takes a {kind.__name__}, not {value!r}"
    return f"set {name} to {session.options[name]}"
