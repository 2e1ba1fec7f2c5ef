#!/usr/bin/env python3
"""Plots of the benchmarks (tests/src/bench.rs writes the CSV files).

usage: bench-plot.py lag|fleet|soak CSV PNG [TITLE]

  lag    percent,records_ms,clock_ms            start-lag quantiles (a CDF)
  fleet  workers,requests_per_tick,ratio,...    etcd requests per tick by fleet size
  soak   seconds,rss_mib:NAME...,db_mib,db_in_use_mib,revision
                                                RSS and etcd db size over time

Needs matplotlib (scripts/bench-deps.sh installs it into .venv).
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(value):
    return float(value) if value not in (None, "") else None


def plot_lag(rows, title):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for column, label in (("records_ms", "records (startTime − planTime)"),
                          ("clock_ms", "command clock (EPOCHREALTIME − tick)")):
        points = [(number(r[column]), float(r["percent"])) for r in rows if number(r[column]) is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label, marker=".", markersize=3)
    ax.set_xlabel("start lag (ms)")
    ax.set_ylabel("runs started within (%)")
    ax.set_ylim(0, 100.5)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig


def plot_fleet(rows, title):
    fig, ax = plt.subplots(figsize=(6, 4))
    workers = [r["workers"] for r in rows]
    values = [float(r["requests_per_tick"]) for r in rows]
    bars = ax.bar(workers, values, color="#4477aa")
    for bar, row in zip(bars, rows):
        ax.annotate(f"{float(row['requests_per_tick']):.2f} ({float(row['ratio']):.2f}×)",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("workers")
    ax.set_ylabel("etcd requests per tick")
    ax.set_ylim(0, max(values + [0.01]) * 1.2)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def plot_soak(rows, title):
    fig, (rss, db) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    minutes = [float(r["seconds"]) / 60 for r in rows]
    for column in rows[0].keys() if rows else []:
        if column.startswith("rss_mib:"):
            rss.plot(minutes, [number(r[column]) for r in rows], label=column.split(":", 1)[1])
    rss.set_ylabel("RSS (MiB)")
    rss.set_ylim(bottom=0)
    rss.legend(loc="upper left", fontsize=8, ncol=3)
    rss.grid(True, alpha=0.3)
    rss.set_title(title)
    db.plot(minutes, [number(r["db_mib"]) for r in rows], label="etcd db size")
    db.plot(minutes, [number(r["db_in_use_mib"]) for r in rows], label="etcd db in use")
    db.set_ylabel("MiB")
    db.set_ylim(bottom=0)
    db.set_xlabel("minutes into the window")
    db.legend(loc="upper left", fontsize=8)
    db.grid(True, alpha=0.3)
    return fig


def main(argv):
    if len(argv) < 4 or argv[1] not in ("lag", "fleet", "soak"):
        sys.exit(__doc__)
    kind, source, target = argv[1], argv[2], argv[3]
    title = argv[4] if len(argv) > 4 else ""
    rows = read(source)
    fig = {"lag": plot_lag, "fleet": plot_fleet, "soak": plot_soak}[kind](rows, title)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv)
