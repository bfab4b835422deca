"""Markdown report + matplotlib plots from results/bench.json (written at the end of
``make bench``; ``python -m bench.report`` rewrites it from the saved figures)."""

import json
from pathlib import Path
import sys

from bcq.sw.formats.axbxp import DEFAULT_BXP
from bcq.sw.formats.codebooks import CODEBOOK_SOURCES, default_codebooks
from bcq.sw.formats.config import PRESETS

RESULTS = Path("results")


def _plots(d, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    q = d.get("quality", {}).get("sqnr_db")
    mini = d.get("minilm")
    if q or mini:
        fig, axes = plt.subplots(1, 2 if mini else 1, figsize=(11 if mini else 6, 4), squeeze=False)
        if q:
            ax = axes[0][0]
            for name, v in q.items():
                ax.scatter(v["bits_per_scalar"], v["gaussian"], s=40)
                ax.annotate(name, (v["bits_per_scalar"], v["gaussian"]), textcoords="offset points", xytext=(5, 3))
            ax.set(xlabel="effective bits per scalar", ylabel="SQNR (dB), Gaussian 2^20", title="SQNR vs bits")
            ax.grid(alpha=0.3)
        if mini:
            ax = axes[0][-1]
            for name, v in mini.items():
                if not isinstance(v, dict) or "layers" not in v:
                    continue
                act = [l["act_sqnr_db"] for l in v["layers"].values()]
                ax.scatter(v["bits_per_scalar"], sum(act) / len(act), s=40)
                ax.annotate(name, (v["bits_per_scalar"], sum(act) / len(act)), textcoords="offset points", xytext=(5, 3))
            ax.set(xlabel="effective bits per scalar", ylabel="mean activation SQNR (dB)",
                   title="MiniLM-L6 W4A4, all linear layers")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "sqnr_vs_bits.png", dpi=110)
        plt.close(fig)
        made.append("sqnr_vs_bits.png")
    mb = d.get("minilm_bxp", {}).get("modes")
    if mb:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, v in mb.items():
            ax.scatter(v["products_per_cycle"], 100 * v["nearest_agreement"], s=40,
                       marker={"exact": "o", "static": "s", "dynamic": "^"}[v["kind"]])
            ax.annotate(f"{name} ({v['cosine_mean']:.3f})", (v["products_per_cycle"], 100 * v["nearest_agreement"]),
                        textcoords="offset points", xytext=(5, 3), fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="products per cycle of one Ax-BxP MAC (log2)",
               ylabel="nearest-neighbour agreement with FP32 (%)",
               title="MiniLM-L6 through each Ax-BxP mode (label: cosine to FP32)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "bxp_accuracy_vs_throughput.png", dpi=110)
        plt.close(fig)
        made.append("bxp_accuracy_vs_throughput.png")
    units = _lut_per_mac(d)
    if units:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh([u for u, _ in units], [v for _, v in units])
        ax.set_xscale("log")
        ax.set(xlabel="LUT4 per MAC (Yosys synth_ecp5, log scale)", title="Logic per multiply-accumulate")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out / "lut4_per_mac.png", dpi=110)
        plt.close(fig)
        made.append("lut4_per_mac.png")
    cb = default_codebooks()
    fig, ax = plt.subplots(figsize=(7, 4))
    for c, row in enumerate(cb.entries.tolist()):
        ax.plot(range(len(row)), sorted(row), marker=".", alpha=0.7)
    ax.set(xlabel="entry (sorted)", ylabel=f"INT{cb.config.entry_bits} value",
           title=f"Shipped LO-BCQ codebooks ({cb.config.n_codebooks} of {cb.config.n_entries} entries)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "codebooks.png", dpi=110)
    plt.close(fig)
    made.append("codebooks.png")
    return made


def _lut_per_mac(d):
    rows = []
    for key, v in d.get("hw", {}).items():
        if isinstance(v, dict) and v.get("macs_per_cycle"):     # results of the single-flow bench
            rows.append((f"{key} ({v['macs_per_cycle']} MAC/c, DSPs on)", v["LUT4"] / v["macs_per_cycle"]))
        elif isinstance(v, dict):                                 # {flow: counts}, both flows
            for flow, c in v.items():
                if isinstance(c, dict) and c.get("macs_per_cycle"):
                    rows.append((f"{key} ({c['macs_per_cycle']} MAC/c, {'DSPs on' if flow == 'dsp' else 'no DSP'})",
                                 c["LUT4"] / c["macs_per_cycle"]))
    syn = d.get("bxp", {}).get("synth", {}).get("nodsp", {})
    if "int8_mac_x16" in syn:
        rows.append(("int8 MAC x16 (no DSP)", syn["int8_mac_x16"]["LUT4"] / 16))
    eng = d.get("bxp_engine")
    if eng:
        for mode in DEFAULT_BXP.modes:
            if mode.name in eng:
                ppc = eng[mode.name]["peak_products_per_cycle"]
                rows.append((f"Ax-BxP engine R=4 {mode.name} ({ppc}/c, no DSP)", eng[mode.name]["lut4_per_product"]))
    if "bxp_mac" in syn:
        for mode in DEFAULT_BXP.modes:
            ppc = DEFAULT_BXP.products_per_cycle(mode)
            rows.append((f"Ax-BxP MAC {mode.name} ({ppc}/c, no DSP)", syn["bxp_mac"]["LUT4"] / ppc))
    return rows


# Issue 13's "today" column: measured with `make bench` / `make bitstream` before the engine
# rework (the issue's table), kept here so that the report shows old and new side by side.
BEFORE_13 = {"bcq_dot_b1": {"dsp": 96.6, "nodsp": 232.1, "DP16KD": 16, "MULT18X18D": 10},
             "engine": {"macs": 32, "DP16KD": 109, "MULT18X18D": 40, "clock_mhz": 50, "fmax_mhz": "46.4 to 55.6"}}


def _issue13(d):
    hw = d.get("hw", {})
    b1 = hw.get("bcq_dot_b1", {})
    if "dsp" not in b1:
        return []
    L = ["## Issue 13: unit cost before and after (Yosys synth_ecp5, both flows)", "",
         "| figure | before | after | bound |", "|---|---|---|---|"]
    mx, i8 = hw.get("mxfp4_dot_x8", {}), hw.get("int8_mac_x16", {})
    L.append(f"| bcq-dot B=1 LUT4/MAC, DSP flow | {BEFORE_13['bcq_dot_b1']['dsp']} | {b1['dsp']['LUT4_per_MAC']:.1f} | "
             f"<= MXFP4's {mx.get('dsp', {}).get('LUT4_per_MAC', float('nan')):.1f} |")
    L.append(f"| bcq-dot B=1 LUT4/MAC, -nodsp | {BEFORE_13['bcq_dot_b1']['nodsp']} | {b1['nodsp']['LUT4_per_MAC']:.1f} | "
             f"<= 0.75 x INT8 x16's = {0.75 * i8.get('nodsp', {}).get('LUT4_per_MAC', float('nan')):.1f} |")
    L.append(f"| bcq-dot B=1 DP16KD (8 lanes) | {BEFORE_13['bcq_dot_b1']['DP16KD']} | {b1['dsp']['EBR']} | <= 4 |")
    eng = d.get("engine", {}).get("synth")
    if eng:
        be = BEFORE_13["engine"]
        L.append(f"| board engine MAC/cycle | {be['macs']} | {eng['macs_per_cycle']} | >= 256 |")
        L.append(f"| board engine DP16KD / MAC | {be['DP16KD'] / be['macs']:.2f} | {eng['DP16KD_per_MAC']:.2f} | |")
        L.append(f"| board engine MACs / MULT18X18D | {be['macs'] / be['MULT18X18D']:.2f} | "
                 f"{eng['MACs_per_MULT18'] or 0:.2f} | >= 2 (goal) |")
        L.append(f"| board engine LUT4 / MAC | | {eng['LUT4_per_MAC']:.1f} | |")
    bd = d.get("board")
    if bd:
        be = BEFORE_13["engine"]
        fmax = ", ".join(f"{f:.1f}" for f in bd["fmax_mhz"])
        L.append(f"| ULX3S-85F post-route Fmax (seeds {', '.join(map(str, bd['seeds']))}) | {be['fmax_mhz']} "
                 f"(clock {be['clock_mhz']}) | {fmax} (clock {bd['clock_mhz']:g}) | >= 75 on three seeds |")
        L.append(f"| ULX3S-85F peak GMAC/s at the clock (at the lowest Fmax) | {be['macs'] * be['clock_mhz'] / 1e3:.1f} | "
                 f"{bd['peak_gmacs_at_clock']:.1f} ({bd.get('peak_gmacs_at_min_fmax', float('nan')):.1f}) | |")
    L.append("")
    return L


def _preset_rows(d):
    """One row per preset from the quality, minilm and speed sections (whichever were run)."""
    q = d.get("quality", {}).get("sqnr_db", {})
    mini, speed = d.get("minilm", {}), d.get("speed", {}).get("encode", {})
    rows = []
    for preset in PRESETS:
        keys = [f"lobcq:{preset}:{s}" for s in CODEBOOK_SOURCES]
        if not any(k in q or k in mini for k in keys):
            continue

        def pair(src, field, fmt):
            return " / ".join(fmt.format(src[k][field]) if k in src and field in src[k] else "-" for k in keys)
        enc = speed.get(f"lobcq:{preset}")
        rows.append(f"| {preset} | {PRESETS[preset].bits_per_scalar:g} | " +
                    " | ".join(pair(q, k, "{:.2f}") for k in ("gaussian", "laplace", "student-t(3)")) +
                    f" | {pair(mini, 'cosine_mean', '{:.4f}')} | {pair(mini, 'spearman', '{:.4f}')} | "
                    + (f"{enc / 1e6:.1f} |" if enc else "- |"))
    return rows


def write(d, out=RESULTS):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(d, out)
    L = ["# Benchmark report", "", "Written by `make bench` from `results/bench.json` (all figures measured on "
         "the machine that ran it).", ""]
    q = d.get("quality")
    if q:
        dists = [k for k in next(iter(q["sqnr_db"].values())) if k not in ("bits_per_scalar", "preset")]
        L += ["## SQNR on synthetic data (2^20 samples, dB)", "",
              "LO-BCQ rows: `lobcq:<preset>:<codebooks>` (shipped sets, calibrated on the synthetic mix or on "
              "MiniLM-L6 data). Baselines: the standard ones, then variants at 4.5 bits.", "",
              "| format | bits/scalar | " + " | ".join(dists) + " |", "|---|---|" + "---|" * len(dists)]
        for name, v in q["sqnr_db"].items():
            L.append(f"| {name} | {v['bits_per_scalar']:g} | " + " | ".join(f"{v[k]:.2f}" for k in dists) + " |")
        L.append("")
    mini = d.get("minilm")
    if mini:
        names = [k for k, v in mini.items() if isinstance(v, dict) and "bits_per_scalar" in v]
        names.sort(key=lambda k: mini[k]["bits_per_scalar"])
        L += [f"## MiniLM-L6 W4A4 ({mini['sentences']} held-out sentences, every linear layer's weights and inputs)", "",
              "| format | bits/scalar | cosine to FP32 mean | 1 - cosine | min | Spearman of pair similarities | "
              "weight SQNR mean (dB) | activation SQNR mean (dB) |", "|---|---|---|---|---|---|---|---|"]
        for name in names:
            v = mini[name]
            ls = v["layers"].values()
            w = sum(l["weight_sqnr_db"] for l in ls) / len(ls)
            a = sum(l["act_sqnr_db"] for l in ls) / len(ls)
            L.append(f"| {name} | {v['bits_per_scalar']:g} | {v['cosine_mean']:.4f} | {1 - v['cosine_mean']:.4f} | "
                     f"{v['cosine_min']:.4f} | {v.get('spearman', float('nan')):.4f} | {w:.2f} | {a:.2f} |")
        if "targets" in mini:
            L += [""] + [f"- {line}" for line in mini["targets"]["lines"]]
        L += ["", "Per layer (weight / activation SQNR, dB):", "",
              "| layer | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for layer in mini[names[0]]["layers"]:
            cells = []
            for n in names:
                l = mini[n]["layers"][layer]
                cells.append(f"{l['weight_sqnr_db']:.1f} / {l['act_sqnr_db']:.1f}")
            L.append(f"| {layer.removeprefix('0.model.')} | " + " | ".join(cells) + " |")
        L.append("")
    presets = _preset_rows(d)
    if presets:
        L += ["## LO-BCQ presets", "",
              "SQNR (dB, 2^20 samples) and MiniLM cosine with the shipped codebooks: synthetic / MiniLM-calibrated; "
              "encode speed on the CPU (Mscalars/s).", "",
              "| preset | bits/scalar | Gaussian | Laplace | Student-t(3) | MiniLM cosine | MiniLM Spearman | encode |",
              "|---|---|---|---|---|---|---|---|"]
        L += presets + [""]
    sp = d.get("speed")
    if sp:
        L += ["## Software speed (CPU)", "", "```", json.dumps(sp, indent=1), "```", ""]
    hw = _lut_per_mac(d)
    if hw:
        L += ["## Hardware cost (Yosys synth_ecp5)", "", "| unit | LUT4 per MAC |", "|---|---|"]
        L += [f"| {u} | {v:.1f} |" for u, v in hw]
        L.append("")
    L += _issue13(d)
    syn = d.get("bxp", {}).get("synth", {})
    if syn:
        L += ["## Reconfigurable MAC vs plain MACs (Yosys synth_ecp5)", "",
              "One Ax-BxP MAC serves every mode at run time, so its cost is shared; LUT4/MAC above "
              "divides it by each mode's products per cycle.", "",
              "Fmax: nextpnr-ecp5 out of context (LFE5U-85F) on the -nodsp netlist, mean over seeds.", "",
              "| flow | unit | LUT4 | FF | MULT18X18D | Fmax (MHz) |", "|---|---|---|---|---|---|"]
        for flow, units in syn.items():
            for u, c in units.items():
                f = f"{c['fmax_mhz']:.1f}" if "fmax_mhz" in c else "-"
                L.append(f"| {flow} | {u} | {c['LUT4']} | {c['FF']} | {c['MULT18X18D']} | {f} |")
        L.append("")
    eng = d.get("bxp_engine")
    if eng:
        c = eng["synth"]
        L += [f"## Ax-BxP matrix-vector engine, 4 rows ({c['LUT4']} LUT4, {c['FF']} FF, {c['EBR']} DP16KD, "
              "synth_ecp5 -nodsp up to 16 x 128)", "",
              f"Verilator, MiniLM `{eng['layer']}` (rows 0-47 x 384), 2 vectors, bit-exact against the golden model in "
              "every mode.", "",
              "| mode | products/cycle (peak) | measured | rel. L2 vs FP32 | LUT4 per product |", "|---|---|---|---|---|"]
        for name, v in eng.items():
            if isinstance(v, dict) and "rel_l2" in v:
                L.append(f"| {name} | {v['peak_products_per_cycle']} | {v['products_per_cycle']:.1f} | "
                         f"{v['rel_l2']:.4f} | {v['lut4_per_product']:.1f} |")
        L.append("")
    mb = d.get("minilm_bxp")
    if mb:
        base = mb["modes"]["exact8"]
        L += [f"## MiniLM-L6 through the Ax-BxP modes ({mb['sentences']} sentences)", "",
              "Every linear layer computes `(Q(x) @ Q(W).T) * s_x * s_w + b` with the golden model of the mode "
              "(symmetric quantization at the mode's precision: weights per output channel, activations per "
              "token); the rest of the model is FP32. Nearest-neighbour agreement: for every sentence, its most "
              "similar other sentence is the same as with FP32.", "",
              "| mode | products/cycle | cosine mean | cosine min | NN agreement % | loss vs exact8 (points) | "
              "layer rel. L2 mean | max |", "|---|---|---|---|---|---|---|---|"]
        for name, v in mb["modes"].items():
            L.append(f"| {name} | {v['products_per_cycle']} | {v['cosine_mean']:.4f} | {v['cosine_min']:.4f} | "
                     f"{100 * v['nearest_agreement']:.1f} | "
                     f"{100 * (base['nearest_agreement'] - v['nearest_agreement']):+.1f} | "
                     f"{v['layer_rel_l2_mean']:.4f} | {v['layer_rel_l2_max']:.4f} |")
        within = mb.get("within_1pct_of_exact8", [])
        L += ["", f"Approximate modes within 1 point of exact8: {', '.join(within) or 'none'}.", "",
              "Per layer (relative L2 error of the layer output vs the FP32 layer on the same input):", "",
              "| layer | " + " | ".join(mb["modes"]) + " |", "|---|" + "---|" * len(mb["modes"])]
        for layer in base["layer_rel_l2"]:
            L.append(f"| {layer.removeprefix('0.auto_model.')} | " +
                     " | ".join(f"{v['layer_rel_l2'][layer]:.3f}" for v in mb["modes"].values()) + " |")
        L.append("")
    fpga = d.get("fpga")
    if fpga:
        L += ["## nextpnr full builds", "", "| board | Fmax (MHz) | clock (MHz) | met | build (s) |", "|---|---|---|---|---|"]
        for b, r in fpga.items():
            L.append(f"| {b} | {r['fmax_mhz']:.1f} | {r['target_mhz']:.0f} | {'yes' if r['met'] else 'no'} | {r['seconds']:.0f} |")
        L.append("")
    gpu = d.get("gpu")
    if gpu:
        L += ["## GPU (CUDA path of the same code)", "", "```", json.dumps(gpu, indent=1), "```", ""]
    if "stress" in d:
        L += ["## Stress (compiled harness, `make stress`)", "",
              "| config | vectors | wall s | vectors/s | sim s wall / CPU | generation s wall / CPU | generation overlap "
              "| cycles | load average |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in d["stress"].items():
            if "sim_cpu_s" in r:
                L.append(f"| {name} | {r['vectors']} | {r['wall_s']:.1f} | {r['vectors_per_s']} | {r['sim_s']:.1f} / "
                         f"{r['sim_cpu_s']:.1f} | {r['gen_s']:.1f} / {r['gen_cpu_s']:.1f} | {r['generation_overlap']:.2f} "
                         f"| {r['cycles']} | {r.get('load_average', '')} |")
        L.append("")
    if "coverage" in d:
        L += ["## Coverage (Verilator line + toggle over a harness run, `make coverage`)", "",
              "| config | module | lines hit / points | line % | toggle % |", "|---|---|---|---|---|"]
        for name, c in d["coverage"].items():
            for module, m in c["modules"].items():
                if m["lines"] or m["toggles"]:
                    L.append(f"| {name} | {module} | {m['lines_hit']} / {m['lines']} | {100 * m['line_coverage']:.1f} "
                             f"| {100 * m['toggle_coverage']:.1f} |")
        L.append("")
    L += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(L))
    return path, plots


def main(argv=None):
    d = json.loads((RESULTS / "bench.json").read_text())
    for key in ("stress", "coverage", "gpu"):
        extra = RESULTS / f"{key}.json"
        if extra.exists():
            d[key] = json.loads(extra.read_text())
    path, plots = write(d)
    print(f"wrote {path} and {', '.join(plots)} in {RESULTS}/")


if __name__ == "__main__":
    sys.exit(main())
