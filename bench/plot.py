#!/usr/bin/env python3
"""Plot sections 1 and 2 of bench/results.json (BENCHMARKS.md's numbers):
provider ops/s and per-operation p50 latency against cache size, shm and
shmcb, for each number of children (section 1); and, when present, the
cost of a first and a repeated retrieve in one child (section 2). Reads
the files of earlier runs too, whose keys were "part1" and "part1.first".

Usage: python3 bench/plot.py [bench/results.json] [bench/results.png]
Needs matplotlib (optional: bench/run.py skips the plot without it).
"""

import json
import os
import sys


def plot(results_path, png_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_path) as f:
        r = json.load(f)
    p1 = r.get("section1") or r.get("part1")
    if not p1:
        return False
    sizes = p1["sizes"]
    conc = p1["children"]
    cells = p1["cells"]
    labels = ["512000 B" if s == 512000 else "%d MiB" % (s >> 20) for s in sizes]
    first = (r.get("section2") or {}).get("cells") or p1.get("first") or {}
    fsizes = [s for s in sizes if "shm/%d" % s in first and "shmcb/%d" % s in first]
    if fsizes:
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.6))
    else:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4))
        a3 = None
    colors = {"shm": "tab:blue", "shmcb": "tab:red"}
    styles = {1: "-", 2: "--", 4: "-.", 8: ":"}
    for prov in ("shm", "shmcb"):
        for c in conc:
            ys, lo, hi, p50 = [], [], [], []
            for s in sizes:
                cell = cells.get("%s/%d/%d" % (prov, s, c))
                if cell is None:
                    break
                ys.append(cell["median"])
                lo.append(cell["median"] - min(cell["ops_s"]))
                hi.append(max(cell["ops_s"]) - cell["median"])
                p50.append(cell["p50_ns"] / 1000.0)
            if len(ys) != len(sizes):
                continue
            x = range(len(sizes))
            a1.errorbar(x, ys, yerr=[lo, hi], color=colors[prov], linestyle=styles.get(c, "-"),
                        marker="o", capsize=3, label="%s, %d %s" % (prov, c, "child" if c == 1 else "children"))
            a2.plot(x, p50, color=colors[prov], linestyle=styles.get(c, "-"), marker="o",
                    label="%s, %d %s" % (prov, c, "child" if c == 1 else "children"))
    if a3 is not None:
        fx = [sizes.index(s) for s in fsizes]
        for prov in ("shm", "shmcb"):
            for name, style, what in (("first", "-", "first read"), ("again", "--", "repeated")):
                ys = [first["%s/%d" % (prov, s)][name]["median"] / 1000.0 for s in fsizes]
                a3.plot(fx, ys, color=colors[prov], linestyle=style, marker="o",
                        label="%s, %s" % (prov, what))
        a3.set_ylabel("µs per retrieve (median of repeats)")
        a3.set_title("one child, full cache: first vs repeated read")
        a3.legend(fontsize=7)
    for ax in [a for a in (a1, a2, a3) if a is not None]:
        ax.set_yscale("log")
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels(labels)
        ax.set_xlabel("cache size (filled to capacity)")
        ax.grid(True, which="both", alpha=0.3)
    a1.set_ylabel("ops/s, all children (median, min-max)")
    a1.set_title("socache ops/s inside httpd (mix %s)" % p1["mix"].replace(",", "/"))
    a2.set_ylabel("per-operation p50 (µs)")
    a2.set_title("latency per provider call")
    a1.legend(fontsize=7, ncol=2)
    m = r.get("machine", {})
    fig.suptitle("shm vs shmcb, %s, %s CPUs" % (m.get("cpu", "?"), m.get("nproc", "?")),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results.json")
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "results.png")
    if not plot(src, dst):
        sys.exit("no section 1 figures in %s" % src)
    print("wrote %s" % dst)
