"""scripts/bench's summary (medians over rounds) and its markdown tables."""

from __future__ import annotations

import statistics
from typing import Any

NAMES = ("llama-server", "llamahomed")


def med(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def ratio(ours: Any, peer: Any) -> Any:
    return round(ours / peer, 3) if peer and ours is not None else None


def summarize_waves(waves: list[dict[str, Any]], clients: list[int], sampling: str) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in NAMES:
        summary[name] = {}
        for c in clients:
            mine = [w for w in waves if w["server"] == name and w["clients"] == c and w["sampling"] == sampling]
            ttfts = [t for w in mine for t in w["ttft_s"]]
            summary[name][str(c)] = {
                "agg_tok_s": med([w["agg_tok_s"] for w in mine]),
                "agg_tok_s_rounds": [w["agg_tok_s"] for w in mine],
                "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
                "short_sequences": sum(w["short"] for w in mine),
                "errors": sum(len(w["errors"]) for w in mine),
            }
    summary["ratio"] = {str(c): ratio(summary["llamahomed"][str(c)]["agg_tok_s"],
                                      summary["llama-server"][str(c)]["agg_tok_s"]) for c in clients}
    return summary


def summarize_rows(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Median of ``key`` per server over rounds."""
    return {name: med([r.get(key) for r in rows if r["server"] == name]) for name in NAMES}


def summarize_mixed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in NAMES:
        base = [r for r in rows if r["server"] == name and not r["arrival"]]
        hit = [r for r in rows if r["server"] == name and r["arrival"]]
        out[name] = {"itl_p50_ms": med([r["itl"]["p50_ms"] for r in base]),
                     "itl_p99_ms": med([r["itl"]["p99_ms"] for r in base]),
                     "prefill_itl_p50_ms": med([r["itl_during_prefill"]["p50_ms"] for r in hit]),
                     "prefill_itl_p99_ms": med([r["itl_during_prefill"]["p99_ms"] for r in hit]),
                     "prefill_itl_max_ms": med([r["itl_during_prefill"]["max_ms"] for r in hit]),
                     "long_ttft_ms": med([r["long_ttft_ms"] for r in hit])}
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    s = result["settings"]
    summary: dict[str, Any] = {}
    if result["waves"]:
        summary["throughput"] = {m: summarize_waves(result["waves"], s["clients"], m) for m in s["sampling"]}
    if result.get("prefill"):
        summary["prefill_tok_s"] = summarize_rows(result["prefill"], "prefill_tok_s")
        summary["prefill_ttft_ms"] = summarize_rows(result["prefill"], "ttft_ms")
    if result.get("mixed"):
        summary["mixed"] = summarize_mixed(result["mixed"])
    if result.get("copy"):
        summary["copy_decode_tok_s"] = summarize_rows(result["copy"], "decode_tok_s")
    return summary


def cells(values: list[Any]) -> str:
    return " | ".join("-" if v is None else str(v) for v in values)


def throughput_table(result: dict[str, Any], sampling: str) -> list[str]:
    clients = result["settings"]["clients"]
    s = result["summary"]["throughput"][sampling]
    head = " | ".join(f"{c} client{'s' if c != 1 else ''}" for c in clients)
    lines = [f"**{sampling} sampling**", "", f"| aggregate tok/s | {head} |", "|---|" + "---|" * len(clients)]
    for name in NAMES:
        lines.append(f"| {name} | {cells([s[name][str(c)]['agg_tok_s'] for c in clients])} |")
    lines.append(f"| ratio (llamahomed / llama-server) | {cells([s['ratio'][str(c)] for c in clients])} |")
    for name in NAMES:
        lines.append(f"| TTFT p50 ms, {name} | {cells([s[name][str(c)]['ttft_p50_ms'] for c in clients])} |")
    lines.append(f"| llamahomed sequences ended by EOS before {result['settings']['tokens']} | "
                 f"{cells([s['llamahomed'][str(c)]['short_sequences'] for c in clients])} |")
    for name in NAMES:
        errors = [s[name][str(c)]["errors"] for c in clients]
        if any(errors):
            lines.append(f"| failed requests, {name} (not counted in tok/s) | {cells(errors)} |")
    if sampling == result["settings"]["sampling"][0]:
        rss = result.get("peak_rss_mib") or {}
        for name in NAMES:
            lines.append(f"| peak RSS MiB, {name} | {cells([rss.get(str(c), {}).get(name) for c in clients])} |")
    lines.append("")
    return lines


def extra_tables(result: dict[str, Any]) -> list[str]:
    s, lines = result["summary"], []
    bench = result.get("llama_bench") or {}
    if "prefill_tok_s" in s:
        pp = (bench.get("pp512") or {}).get("avg_ts")
        tokens = next((r["prompt_tokens"] for r in result["prefill"] if r.get("prompt_tokens")), None)
        lines += [f"| prefill, {tokens}-token prompt | tok/s | TTFT ms | / llama-bench pp512 |", "|---|---|---|---|"]
        for name in NAMES:
            tps = s["prefill_tok_s"][name]
            lines.append(f"| {name} | {cells([tps, s['prefill_ttft_ms'][name], ratio(tps, pp)])} |")
        lines.append(f"| llama-bench pp512 | {cells([pp])} | | |")
        lines.append("")
    if "mixed" in s:
        lines += ["| running streams, long prompt arriving | ITL p50 ms | ITL p99 ms | ITL p50 / p99 / max ms "
                  "while it prefills | its TTFT ms |", "|---|---|---|---|---|"]
        for name in NAMES:
            m = s["mixed"][name]
            during = " / ".join("-" if v is None else str(v) for v in
                                (m["prefill_itl_p50_ms"], m["prefill_itl_p99_ms"], m["prefill_itl_max_ms"]))
            lines.append(f"| {name} | {cells([m['itl_p50_ms'], m['itl_p99_ms']])} | {during} | "
                         f"{cells([m['long_ttft_ms']])} |")
        lines.append("")
    if "copy_decode_tok_s" in s:
        c = s["copy_decode_tok_s"]
        lines += ["| copy task, 1 greedy stream | decode tok/s |", "|---|---|"]
        lines += [f"| {name} | {cells([c[name]])} |" for name in NAMES]
        lines.append(f"| ratio (llamahomed / llama-server) | {cells([ratio(c['llamahomed'], c['llama-server'])])} |")
        spec = result["settings"].get("daemon_system_settings", {}).get("speculative")
        lines += ["", f"daemon speculative setting: {spec if spec is not None else '(none)'}", ""]
    return lines


def footer(result: dict[str, Any]) -> list[str]:
    bench, st = result.get("llama_bench") or {}, result["settings"]
    lines = []
    for test in (f"tg{st['tokens']}", "pp512"):
        if test in bench:
            lines.append(f"llama-bench {test} (1 sequence, t={st['threads']}): {bench[test]['avg_ts']} ± "
                         f"{bench[test]['stddev_ts']} tok/s")
    if "error" in bench:
        lines.append(f"llama-bench failed: {bench['error'][-300:]}")
    m = result["machine"]
    lines += ["", f"machine: {m['cpu']}, {m['physical_cores']} cores / {m['logical_cpus']} logical CPUs, "
                  f"{m['system']}; load average {m['loadavg_start'][0]:.2f} at start, "
                  f"{m['loadavg_end'][0]:.2f} at end",
              f"llama.cpp: vendored by llama-cpp-python {result['build']['llama_cpp_python']}, "
              f"GGML flags: {result['build']['ggml_flags'] or '(llama.cpp defaults)'}",
              f"settings: {st['tokens']} tokens per request, threads {st['threads']}, n_ctx {st['n_ctx']} "
              f"(shared by all slots on both), slots = clients, rounds {st['rounds']} (median shown)"]
    idles = [w["cpu_idle_before"] for w in result["waves"]]
    if idles:
        others = [w["others_cpu"] for w in result["waves"]]
        lines.append(f"CPUs idle just before a wave: {min(idles):.0%} at least; share of the CPUs other "
                     f"processes used during a wave: {max(others):.0%} at most, "
                     f"{statistics.median(others):.0%} median ({len(result['discarded_waves'])} "
                     f"busier waves discarded and run again)")
    daemon = st.get("daemon_system_settings", {})
    shown = {k: daemon[k] for k in ("engine", "n_threads", "n_ctx", "speculative") if k in daemon}
    lines.append(f"llamahomed {result['llamahome_revision']}: "
                 + (", ".join(f"{k} {v}" for k, v in shown.items()) or "(settings unknown)"))
    if st["daemon_extra_env"]:
        lines.append(f"daemon extra env: {st['daemon_extra_env']}")
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if "throughput" in result["summary"]:
        for sampling in result["settings"]["sampling"]:
            lines += throughput_table(result, sampling)
    lines += extra_tables(result) + footer(result)
    return "\n".join(lines)
