"""The report: ratios computed from the measured figures, and the tables printed as text or markdown.

Everything printed is read from the result that is also written as JSON, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODULE_GRPC, MODULE_REST, PEER_GRPC, PEER_REST = "module_grpc", "module_rest", "peer_grpc", "peer_rest"
DIRECT, MINIMAL = "direct", "minimal"


def ratio(value: float | None, reference: float | None) -> float | None:
    """`value` over `reference`, rounded; None when either is missing or the reference is zero."""
    if value is None or not reference:
        return None
    return round(value / reference, 3)


def compute_ratios(result: Mapping[str, Any]) -> dict[str, Any]:
    """Each load's figures over direct boto3's and the minimal gateway's; the module's over the peer's."""
    loads = result["loads"]
    ratios: dict[str, Any] = {}
    for name, load in loads.items():
        figures = load["results"]
        ratios[name] = {
            key: {
                f"{figure}_vs_{reference}": ratio(run[figure], figures.get(reference, {}).get(figure))
                for figure in ("p50_ms", "p99_ms", "calls_per_s", "server_cpu_ms_per_call")
                for reference in (DIRECT, MINIMAL)
            }
            for key, run in figures.items()
        }
    batch = result["batch"]["results"]

    def versus(key: str, reference: str) -> dict[str, float | None]:
        def figure(load: str, name: str) -> float | None:
            runs = loads[load]["results"]
            if key not in runs or reference not in runs:
                return None
            return ratio(runs[key][name], runs[reference][name])

        return {
            "latency_p50": figure("latency", "p50_ms"),
            "latency_p99": figure("latency", "p99_ms"),
            "echo_calls_per_s": figure("echo_throughput", "calls_per_s"),
            "echo_p99": figure("echo_throughput", "p99_ms"),
            "sleep_calls_per_s": figure("sleep_throughput", "calls_per_s"),
            "server_cpu_ms_per_call": figure("echo_throughput", "server_cpu_ms_per_call"),
            "batch_ms": ratio(batch.get(key, {}).get("batch_ms"), batch.get(reference, {}).get("batch_ms")),
        }

    ratios["module_grpc_vs_minimal"] = versus(MODULE_GRPC, MINIMAL)
    ratios["module_grpc_vs_peer_grpc"] = versus(MODULE_GRPC, PEER_GRPC)
    ratios["module_rest_vs_peer_rest"] = versus(MODULE_REST, PEER_REST)
    return ratios


@dataclass
class Table:
    title: str
    headers: Sequence[str]
    rows: list[list[str]]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ms3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def tables(result: Mapping[str, Any]) -> list[Table]:
    """The report's tables, from a result as `gateway_bench` writes it (with its ratios)."""
    labels: Mapping[str, str] = result["paths"]
    loads, ratios = result["loads"], result["ratios"]
    out: list[Table] = []

    latency = loads["latency"]
    rows = []
    for key, run in latency["results"].items():
        r = ratios["latency"][key]
        rows.append(
            [
                labels[key],
                _count(run["calls"]),
                _ms(run["p50_ms"]),
                _times(r["p50_ms_vs_direct"]),
                _times(r["p50_ms_vs_minimal"]) if key != DIRECT else "-",
                _ms(run["p99_ms"]),
                _times(r["p99_ms_vs_direct"]),
                _times(r["p99_ms_vs_minimal"]) if key != DIRECT else "-",
                _count(run["errors"]),
            ]
        )
    out.append(
        Table(
            f"1 caller, echo: latency ({latency['rounds']} rounds of {latency['calls_per_round']} calls per path)",
            ["path", "calls", "p50 ms", "xdirect", "xminimal", "p99 ms", "xdirect", "xminimal", "errors"],
            rows,
        )
    )

    echo = loads["echo_throughput"]
    rows = []
    for key, run in echo["results"].items():
        r = ratios["echo_throughput"][key]
        rows.append(
            [
                labels[key],
                _count(run["calls_per_s"]),
                _times(r["calls_per_s_vs_direct"]),
                _times(r["calls_per_s_vs_minimal"]) if key != DIRECT else "-",
                _ms(run["p50_ms"]),
                _ms(run["p99_ms"]),
                _times(r["p99_ms_vs_direct"]),
                _ms(run["server_cpu_ms_per_call"]),
                _times(r["server_cpu_ms_per_call_vs_minimal"]) if key != MINIMAL else "-",
                _count(run["errors"]),
            ]
        )
    out.append(
        Table(
            f"{echo['callers']} callers, echo: throughput ({echo['rounds']} rounds of {echo['seconds_per_round']:g} s)",
            [
                "path",
                "calls/s",
                "xdirect",
                "xminimal",
                "p50 ms",
                "p99 ms",
                "xdirect",
                "CPU ms/call",
                "xminimal",
                "errors",
            ],
            rows,
        )
    )

    sleep = loads["sleep_throughput"]
    ideal = sleep["callers"] / sleep["function_seconds"]
    rows = []
    for key, run in sleep["results"].items():
        r = ratios["sleep_throughput"][key]
        rows.append(
            [
                labels[key],
                _count(run["calls_per_s"]),
                _times(r["calls_per_s_vs_direct"]),
                f"{run['calls_per_s'] / ideal:.0%}",
                _ms(run["p50_ms"]),
                _ms(run["p99_ms"]),
                _count(run["errors"]),
            ]
        )
    out.append(
        Table(
            f"{sleep['callers']} callers, {sleep['function_seconds'] * 1000:g} ms function: throughput "
            f"({sleep['rounds']} rounds of {sleep['seconds_per_round']:g} s; at most {ideal:,.0f} calls/s)",
            ["path", "calls/s", "xdirect", "of most", "p50 ms", "p99 ms", "errors"],
            rows,
        )
    )

    memory = result["memory"]
    idle = memory["idle_rss_kb"]
    rows = [["idle, after start", f"{idle / 1024:.1f}", "1.00x"]]
    for point in memory["after"]:
        rows.append(
            [
                f"after {point['invocations']:,} invocations",
                f"{point['rss_kb'] / 1024:.1f}",
                _times(ratio(point["rss_kb"], idle)),
            ]
        )
    out.append(
        Table(
            "module memory (RSS, sampled between the rounds of the loads above)",
            ["when", "MB", "xidle"],
            rows,
        )
    )

    batch = result["batch"]
    rows = []
    direct_singles = batch["results"].get(DIRECT, {}).get("singles_ms")
    for key, figures in batch["results"].items():
        rows.append(
            [
                labels[key],
                _ms(figures.get("batch_ms")),
                _ms(figures["singles_ms"]),
                _times(ratio(figures.get("batch_ms"), figures["singles_ms"])),
                _times(ratio(figures["singles_ms"], direct_singles)),
                _count(figures["failed"]),
            ]
        )
    out.append(
        Table(
            f"BatchInvoke of {batch['size']} against {batch['size']} single calls in a row, echo, gRPC "
            f"(median of {batch['rounds']})",
            ["path", "batch ms", "singles ms", "batch/singles", "singles xdirect", "failed"],
            rows,
        )
    )

    comparisons = [
        ("module gRPC / minimal gateway", ratios["module_grpc_vs_minimal"]),
        ("module gRPC / peer gRPC", ratios["module_grpc_vs_peer_grpc"]),
        ("module REST / peer REST", ratios["module_rest_vs_peer_rest"]),
    ]
    figures = [
        ("latency_p50", "1 caller p50"),
        ("latency_p99", "1 caller p99"),
        ("echo_calls_per_s", f"{echo['callers']} callers calls/s"),
        ("echo_p99", f"{echo['callers']} callers p99"),
        ("sleep_calls_per_s", f"{sleep['callers']} callers calls/s, {sleep['function_seconds'] * 1000:g} ms"),
        ("server_cpu_ms_per_call", "server CPU per call"),
        ("batch_ms", f"BatchInvoke of {batch['size']}"),
    ]
    rows = [[label, *(_times(compared[name]) for _, compared in comparisons)] for name, label in figures]
    out.append(
        Table(
            "the module over the others (below 1x is less time, CPU or calls/s)",
            ["figure", *(c for c, _ in comparisons)],
            rows,
        )
    )
    profiled = result.get("profile") or {}
    if profiled:
        keys = list(profiled)
        areas = [area for area in profiled[keys[-1]]["gil_ms_per_call"] if area != "all"]
        areas += sorted({area for key in keys for area in profiled[key]["gil_ms_per_call"]} - {*areas, "all"})
        rows = [[area, *(_ms3(profiled[key]["gil_ms_per_call"].get(area)) for key in keys)] for area in [*areas, "all"]]
        rows.append(["CPU ms/call, all threads", *(_ms3(profiled[key]["server_cpu_ms_per_call"]) for key in keys)])
        first = profiled[keys[0]]
        out.append(
            Table(
                f"where the time goes: ms per call holding the GIL, by area (py-spy, {first['seconds']:g} s of echo "
                f"at {first['callers']} callers per path)",
                ["area", *(labels[key] for key in keys)],
                rows,
            )
        )
    return out


def render_text(table: Table) -> str:
    """The table with aligned columns: the first to the left, the figures to the right."""
    widths = [max(len(row[i]) for row in [list(table.headers), *table.rows]) for i in range(len(table.headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return (
            "  "
            + first.ljust(widths[0])
            + "".join(f"  {cell:>{width}}" for cell, width in zip(rest, widths[1:], strict=True))
        )

    return "\n".join([table.title, line(table.headers), *(line(row) for row in table.rows)])


def render_markdown(table: Table) -> str:
    """The table in markdown, under its title in bold."""
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.headers) + " |"]
    lines.append("| " + " | ".join(["---", *("---:" for _ in table.headers[1:])]) + " |")
    lines.extend("| " + " | ".join(row) + " |" for row in table.rows)
    return "\n".join(lines)


def render(result: Mapping[str, Any], *, markdown: bool = False) -> str:
    """The whole report: a heading line, the notes, and every table."""
    machine = result["machine"]
    heading = (
        f"lambda-action side by side: Python {machine['python']}, {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"load average {machine['load_average_at_start']} at start; module log in {result['database']}; "
        f"{result['duration_s']:.0f} s"
    )
    notes = [f"note: {note}" for note in result["notes"]]
    legend = "xdirect, xminimal: the figure divided by direct boto3's, by the minimal gateway's"
    render_table = render_markdown if markdown else render_text
    blocks = [heading, *notes, legend] if not markdown else [heading + "  ", *(n + "  " for n in notes), legend]
    return "\n".join(blocks) + "\n\n" + "\n\n".join(render_table(table) for table in tables(result)) + "\n"
