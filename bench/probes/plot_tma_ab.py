"""Decision charted: the TMA A/B behind tma_wanted, kept share of cuDNN per row."""
# Chart of a TMA A/B: two ``minference bench kernels`` runs of the same sweep in one process, one with
# ``MINFERENCE_TMA=0`` (K/V through pointers) and one with the default (tensor descriptors on sm90), drawn as each
# sparse row's TFLOP/s on kept tiles as a share of cuDNN's dense TFLOP/s in its own run, against the 80 % target.
#
# Usage: ``python bench/probes/plot_tma_ab.py POINTERS.json TMA.json OUT.png``
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def kept_shares(path: str) -> dict:
    """``{(N, pattern label): kept TFLOP/s / cuDNN TFLOP/s}`` for the sparse rows of one run."""
    rows = json.load(open(path))["rows"]
    cudnn = {r["n"]: r["kept_tflops"] for r in rows if r["method"] == "sdpa_cudnn"}
    shares = {}
    for r in rows:
        if r["method"] == "minference" and r.get("kept_tflops"):
            label = f"{r['n'] // 1024}K {r['pattern']} {r['budget']} {r['index_set']}"
            shares[(r["n"], label)] = r["kept_tflops"] / cudnn[r["n"]]
    return shares


def main(pointers: str, tma: str, out: str) -> None:
    before, after = kept_shares(pointers), kept_shares(tma)
    keys = sorted(before.keys() & after.keys())
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(keys) + 1.9))
    ys = range(len(keys))
    ax.barh([y + 0.2 for y in ys], [100 * before[k] for k in keys], height=0.4, label="K/V through pointers")
    ax.barh([y - 0.2 for y in ys], [100 * after[k] for k in keys], height=0.4, label="K/V through TMA descriptors")
    ax.axvline(80, color="black", linestyle="--", linewidth=1, label="target (80 %)")
    ax.set_yticks(list(ys), [k[1] for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("TFLOP/s on kept tiles, % of cuDNN's dense TFLOP/s in the same run")
    ax.set_xlim(0, 100)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3, fontsize=8)
    ax.set_title("Sparse kernels on an H200 (bf16, 32/8 heads, d128, batch 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(*sys.argv[1:])
