"""scripts/bench's own logic: the request bodies per sampling mode, the inter-token gap window,
and the per-mode summary tables (the benchmark itself is run by hand, never by the tests)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import _bench_report as report  # noqa: E402
import _bench_workloads as work  # noqa: E402
from _bench_servers import Daemon, LlamaServer  # noqa: E402

from llamahomed.core.settings import ModelSettings  # noqa: E402


def test_default_sampling_sends_the_daemons_defaults_to_llama_server_and_nothing_to_the_daemon() -> None:
    defaults = ModelSettings()
    _, peer = LlamaServer(1).request("p", 8, "default")
    _, ours = Daemon(1, "t").request("p", 8, "default")
    assert (peer["temperature"], peer["top_k"], peer["top_p"], peer["repeat_penalty"]) == (
        defaults.temperature, defaults.top_k, defaults.top_p, defaults.repeat_penalty)
    assert not {"temperature", "top_k", "top_p", "repeat_penalty"} & set(ours)
    _, greedy = Daemon(1, "t").request("p", 8, "greedy")
    assert greedy["temperature"] == 0 and greedy["repeat_penalty"] == 1.0


def test_llama_server_final_event_parses_to_done_with_its_timings() -> None:
    line = (b'data: {"content": "", "stop": true, "tokens_predicted": 7, "tokens_evaluated": 20, '
            b'"stop_type": "limit", "timings": {"prompt_per_second": 500.0}}')
    event = LlamaServer(1).parse(line)
    assert event is not None
    assert (event["done"], event["tokens"], event["prompt_tokens"]) == (True, 7, 20)
    assert event["timings"]["prompt_per_second"] == 500.0


def test_gap_window_keeps_only_gaps_that_overlap_the_prefill() -> None:
    arrivals = [0.0, 1.0, 2.0, 5.0, 6.0]
    assert work.gaps(arrivals) == [1.0, 1.0, 3.0, 1.0]
    assert work.gaps(arrivals, 2.5, 4.5) == [3.0]
    assert work.latency([0.001, 0.002, 0.010])["max_ms"] == 10.0


def wave(server: str, clients: int, sampling: str, tok_s: float) -> dict[str, Any]:
    return {"server": server, "clients": clients, "sampling": sampling, "agg_tok_s": tok_s,
            "ttft_s": [0.1], "short": 0, "errors": [], "cpu_idle_before": 1.0, "others_cpu": 0.0}


def test_markdown_has_one_ratio_table_per_sampling_mode_with_medians() -> None:
    waves = [wave("llama-server", 1, m, v) for m in ("greedy", "default") for v in (10.0, 20.0, 30.0)]
    waves += [wave("llamahomed", 1, m, v) for m in ("greedy", "default") for v in (5.0, 10.0, 100.0)]
    result: dict[str, Any] = {
        "settings": {"clients": [1], "sampling": ["greedy", "default"], "tokens": 8, "threads": 2,
                     "n_ctx": 512, "rounds": 3, "daemon_extra_env": {}},
        "waves": waves, "discarded_waves": [], "peak_rss_mib": {"1": {"llama-server": 1.0, "llamahomed": 2.0}},
        "machine": {"cpu": "x", "physical_cores": 1, "logical_cpus": 1, "system": "s",
                    "loadavg_start": [0.0], "loadavg_end": [0.0]},
        "build": {"llama_cpp_python": "0", "ggml_flags": ""}, "llamahome_revision": "abc"}
    result["summary"] = report.summarize(result)
    assert result["summary"]["throughput"]["default"]["ratio"]["1"] == 0.5  # median 10 / median 20
    text = report.markdown(result)
    assert "**greedy sampling**" in text and "**default sampling**" in text
    assert text.count("| ratio (llamahomed / llama-server) | 0.5 |") == 2
