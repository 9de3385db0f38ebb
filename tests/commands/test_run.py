"""``llamahomed run`` and ``llamahomed ps`` against the real daemon: one-shot with pipes, and the
interactive chat driven through a real terminal (tmux send-keys / capture-pane)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.daemon import (
    RunningDaemon,
    chat_store_env,
    dirs_env,
    llamahomed,
    start_daemon,
)

CHAT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, smollm2_file: Path,
           tiny_model_file: Path) -> Iterator[RunningDaemon]:
    """A real daemon with SmolLM2 (a chat model) and the tiny Llama (a base model)."""
    root = tmp_path_factory.mktemp("run-daemon")
    env = chat_store_env(root, smollm2_file, tiny_model_file)
    with start_daemon(root / "daemon", env) as running:
        yield running


def test_a_prompt_with_piped_text_streams_one_answer_and_exits(daemon: RunningDaemon) -> None:
    done = subprocess.run([sys.executable, "-m", "llamahomed", "run", CHAT_MODEL, "Summarize:",
                           "--max-tokens", "24", "--temperature", "0"],
                          input="The cat sat on the mat. It was warm.\n", capture_output=True,
                          text=True, env=daemon.env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "no answer was written"
    assert done.stdout.endswith("\n")


def test_the_same_greedy_prompt_gives_the_same_answer_as_the_api(daemon: RunningDaemon) -> None:
    done = llamahomed("run", CHAT_MODEL, "Name a colour.", "--max-tokens", "12",
                      "--temperature", "0", env=daemon.env)
    assert done.returncode == 0, done.stderr
    api = requests.post(f"{daemon.url}/v1/chat/completions", headers=daemon.headers, timeout=60,
                        json={"model": CHAT_MODEL, "max_tokens": 12, "temperature": 0,
                              "messages": [{"role": "user", "content": "Name a colour."}]})
    assert done.stdout.strip() == api.json()["choices"][0]["message"]["content"].strip()


def test_a_base_model_completes_the_prompt_as_text(daemon: RunningDaemon) -> None:
    done = llamahomed("run", "tiny-llama", "once upon a time", "--max-tokens", "8", env=daemon.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_an_unknown_model_is_a_clear_error(daemon: RunningDaemon) -> None:
    done = llamahomed("run", "no-such-model", "hi", env=daemon.env)
    assert done.returncode == 1
    assert "no model named 'no-such-model'" in done.stderr


def test_without_a_daemon_it_says_so_and_starts_nothing(tmp_path: Path) -> None:
    env = dirs_env(tmp_path, tmp_path / "store", CHAT_MODEL)
    done = llamahomed("run", CHAT_MODEL, "hi", env=env)
    assert done.returncode == 1
    assert "not running" in done.stderr
    assert not (tmp_path / "state" / "daemon.json").exists()
    ps = llamahomed("ps", env=env)
    assert ps.returncode == 3 and "not running" in ps.stdout


def test_ps_lists_the_loaded_models(daemon: RunningDaemon) -> None:
    assert llamahomed("run", CHAT_MODEL, "hi", "--max-tokens", "2", env=daemon.env).returncode == 0
    done = llamahomed("ps", env=daemon.env)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "FILE", "SIZE"]
    assert any(row.startswith(CHAT_MODEL) and "CPU" in row for row in rows), done.stdout
    as_json = llamahomed("ps", "--json", env=daemon.env)
    assert CHAT_MODEL in [m["id"] for m in __import__("json").loads(as_json.stdout)]


# -- the interactive chat, in a real terminal ---------------------------------------------------

class Terminal:
    """A tmux session running one command; keys in, screen text out."""

    def __init__(self, name: str, command: str) -> None:
        self.name = name
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "50", command],
                       check=True)
        subprocess.run(["tmux", "set-option", "-t", name, "remain-on-exit", "on"], check=True)

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def type(self, line: str) -> None:
        self.send("-l", line)
        self.send("Enter")

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-S", "-200", "-t", self.name],
                              capture_output=True, text=True, check=True).stdout

    def wait_for(self, predicate: object, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if callable(predicate) and predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out; the screen was:\n{self.screen()}")

    def dead(self) -> bool:
        out = subprocess.run(["tmux", "display-message", "-p", "-t", self.name, "#{pane_dead}"],
                             capture_output=True, text=True, check=False).stdout.strip()
        return out == "1"

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


@pytest.fixture
def terminal(daemon: RunningDaemon, tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    script = tmp_path / "chat.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in daemon.env.items()
                      if k.startswith(("LLAMAHOME_", "PATH", "HOME", "PYTHON")))
    script.write_text(f"{exports}exec {shlex.quote(sys.executable)} -m llamahomed run {CHAT_MODEL}\n")
    term = Terminal(f"llamahome-run-{os.getpid()}-{time.monotonic_ns()}", f"bash {script}")
    try:
        yield term
    finally:
        term.close()


def _prompts(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith(">>>"))


def test_an_interactive_chat_keeps_history_takes_commands_and_ends_with_bye(
        terminal: Terminal, daemon: RunningDaemon) -> None:
    terminal.wait_for(lambda s: "/bye to leave" in s and _prompts(s) == 1)
    terminal.type("/set temperature 0")
    terminal.wait_for(lambda s: "set temperature to 0.0" in s)
    terminal.type("/set max_tokens 16")
    terminal.wait_for(lambda s: "set max_tokens to 16" in s)
    terminal.type("Say hello.")
    screen = terminal.wait_for(lambda s: _prompts(s) == 4)
    answer = screen.split("Say hello.", 1)[1].split(">>>", 1)[0].strip()
    assert answer, screen
    terminal.type("/show")
    terminal.wait_for(lambda s: '"turns": 1' in s and '"temperature": 0.0' in s)
    terminal.type("/clear")
    terminal.wait_for(lambda s: "cleared the conversation" in s)
    terminal.type("/show")
    terminal.wait_for(lambda s: '"turns": 0' in s)
    terminal.type("/bye")
    terminal.wait_for(lambda s: terminal.dead(), timeout=20)


def test_ctrl_c_stops_the_answer_not_the_session(terminal: Terminal,
                                                  daemon: RunningDaemon) -> None:
    terminal.wait_for(lambda s: _prompts(s) == 1)
    terminal.type("/set max_tokens 4000")
    terminal.wait_for(lambda s: "set max_tokens to 4000" in s)
    terminal.type("Write a very long story about a dragon, in many chapters.")
    # some of the answer is on the screen, and the model is still writing
    terminal.wait_for(lambda s: len(s.split("chapters.", 1)[-1].strip()) > 40)
    terminal.send("C-c")
    terminal.wait_for(lambda s: "[stopped]" in s and s.rstrip().endswith(">>>"), timeout=20)
    assert not terminal.dead()
    # the daemon stopped generating for it (the client went away)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = requests.get(f"{daemon.url}/api/v1/status", headers=daemon.headers, timeout=10).json()
        if all(m["slots_in_use"] == 0 for m in status["models"]):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the answer kept running: {status}")
    terminal.type("/set max_tokens 8")
    terminal.type("Hi")
    terminal.wait_for(lambda s: _prompts(s) >= 5)
    terminal.send("C-d")
    terminal.wait_for(lambda s: terminal.dead(), timeout=20)
