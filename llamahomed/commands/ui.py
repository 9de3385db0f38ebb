"""``llamahomed ui``: open the web console, logged in, with a single-use ticket.

The ticket (60 seconds, one use) rides in the URL fragment, which browsers never send to a
server, so it is in no log; the page trades it for a session token and drops it from the
address bar.
"""

from __future__ import annotations

import argparse
import urllib.error
import webbrowser
from typing import Any

from llamahomed.commands.runtime import admin_token, base_url, post_json, running_daemon
from llamahomed.commands.status import NOT_RUNNING
from llamahomed.core.errors import StartupError
from llamahomed.core.settings import Settings


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("ui", help="open the web console in a browser, logged in",
                            parents=[common])
    parser.add_argument("--no-browser", action="store_true",
                        help="print the one-time address instead of opening a browser")


def run(args: argparse.Namespace, settings: Settings) -> int:
    runtime = running_daemon(settings)
    if runtime is None:
        print("llamahomed is not running; start it with `llamahomed start`")
        return NOT_RUNNING
    token = admin_token(settings)
    if token is None:
        raise StartupError(f"no admin token in {settings.admin_token_file}; open "
                           f"{base_url(runtime)}/ui/ and paste a token instead")
    url = base_url(runtime)
    try:
        ticket = post_json(f"{url}/api/v1/console/ticket", token, {})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StartupError(f"llamahomed does not answer at {url}: {exc}") from exc
    address = url + ticket["path"]
    if args.no_browser or not webbrowser.open(address):
        print(f"open this address within {ticket['expires_in']} seconds (it works once):")
    print(address)
    return 0
