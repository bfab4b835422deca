"""``make bench``: every figure the issues ask for, printed as tables and saved to results/.

Sections can be picked: ``python -m bench quality speed hw sim`` (default: all).
"""
import contextlib
import io
import json
import os
from pathlib import Path
import sys
import tempfile
import time

import torch

from bcq.cli import main as cli_main
from bcq.hw.bcq_dot import BCQDot
from bcq.hw.board import BOARDS
from bcq.hw.bxp_engine import BxPEngine
from bcq.hw.bxp_mac import BxPMac
from bcq.hw.gemv import GEMV
from bcq.hw.int_mac import IntMac
from bcq.hw.mx_dot import MXFP4Dot
from bcq.sim.bxp_engine_run import simulate_bxp_layer
from bcq.sim.engine_run import simulate_layer
from bcq.sim.fpga import build_bitstream
from bcq.sim.runner import build, run_cocotb
from bcq.sim.stress import CONFIGS as STRESS_CONFIGS
from bcq.sim.stress import stress_config
from bcq.sim.synth import synth_ecp5
from bcq.sw.contract.image_layout import BxPLayout, EngineLayout
from bcq.sw.formats.axbxp import DEFAULT_BXP as cfg
from bcq.sw.formats.axbxp import dot, product
from bcq.sw.formats.calibdata import synthetic_calibration_data
from bcq.sw.formats.codebooks import CODEBOOK_SOURCES, DEFAULT_SOURCE, shipped_codebooks
from bcq.sw.formats.config import DEFAULT, PRESETS, BCQConfig
from bcq.sw.formats.lobcq import calibrate, encode, fake_quant
from bcq.sw.formats.quantizers import BASELINES, EQUAL_BITS_BASELINES, get_format, sqnr_db
from bcq.sw.host.models import minilm_layer
from bench import report
from bench.encoder import bench_encoder, bench_encoder_hw
from bench.minilm import default_formats, evaluate
from bench.minilm_bxp import evaluate_modes

RESULTS = Path("results")
DEFAULT_PRESET = next(name for name, c in PRESETS.items() if c == DEFAULT)


def table(title, header, rows):
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def distributions(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(n, generator=g, dtype=torch.float64)
    u = torch.rand(n, generator=g, dtype=torch.float64) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    z = torch.randn(n, generator=g, dtype=torch.float64)
    chi2 = torch.randn(n, 3, generator=g, dtype=torch.float64).pow(2).sum(-1)
    return {"gaussian": gauss, "laplace": laplace, "student-t(3)": z / torch.sqrt(chi2 / 3)}


def _sqnr_formats():
    """name -> (preset or None, format object): every preset with both shipped codebook sets, then
    the baselines (standard, then at 4.5 bits)."""
    out = {}
    for preset in PRESETS:
        for source in CODEBOOK_SOURCES:
            out[f"lobcq:{preset}:{source}"] = (preset, get_format("lobcq", shipped_codebooks(preset, source)))
    for name, f in {**BASELINES, **EQUAL_BITS_BASELINES}.items():
        out[name] = (None, f)
    return out


def bench_quality():
    n = 1 << 20
    data = {k: v.reshape(-1, 1024).float() for k, v in distributions(n).items()}
    rows, out = [], {}
    for name, (preset, f) in _sqnr_formats().items():
        s = {k: sqnr_db(x, f.fake_quant(x)) for k, x in data.items()}
        out[name] = {"bits_per_scalar": f.bits_per_scalar, "preset": preset, **s}
        rows.append([name, f"{f.bits_per_scalar:g}"] + [f"{s[k]:.2f}" for k in data])
    table("SQNR (dB) on 2^20 i.i.d. samples (LO-BCQ: preset, shipped codebooks by calibration source)",
          ["format", "bits/scalar", *data], rows)
    d = f"lobcq:{DEFAULT_PRESET}:{DEFAULT_SOURCE}"
    g = out[d]["gaussian"]
    d_nv, d_mx = g - out["nvfp4"]["gaussian"], g - out["mxfp4"]["gaussian"]
    print(f"\nLO-BCQ default ({DEFAULT_PRESET}, {DEFAULT_SOURCE}) vs NVFP4 on Gaussian: {d_nv:+.2f} dB; "
          f"vs MXFP4: {d_mx:+.2f} dB")
    return {"sqnr_db": out, "lobcq_minus_nvfp4_db": d_nv, "lobcq_minus_mxfp4_db": d_mx}


def _rate(f, x, repeat=3):
    """Best of ``repeat`` runs, scalars/s (after one warm-up call on a slice)."""
    f(x[:64])
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f(x)
        best = min(best, time.perf_counter() - t)
    return x.numel() / best


def bench_speed():
    x = torch.randn(1 << 22, generator=torch.Generator().manual_seed(1)).reshape(-1, 1024)
    rows, out = [], {"encode": {}, "fake_quant": {}}
    for preset in PRESETS:
        cb = shipped_codebooks(preset)
        enc = _rate(lambda t: encode(t, cb), x)
        fq = _rate(lambda t: fake_quant(t, cb), x)
        out["encode"][f"lobcq:{preset}"], out["fake_quant"][f"lobcq:{preset}"] = enc, fq
        rows.append([f"lobcq:{preset}", f"{cb.config.bits_per_scalar:g}", f"{enc / 1e6:.1f}", f"{fq / 1e6:.1f}"])
    for name, f in {**BASELINES, **EQUAL_BITS_BASELINES}.items():
        fq = _rate(f.fake_quant, x)
        out["fake_quant"][name] = fq
        rows.append([name, f"{f.bits_per_scalar:g}", "", f"{fq / 1e6:.1f}"])
    table(f"CPU throughput, 2^22 scalars, {torch.get_num_threads()} threads (Mscalars/s; "
          "encode = BCQ fields, fake_quant = encode + decode)", ["format", "bits/scalar", "encode", "fake_quant"], rows)
    # `bcq quantize w.pt -o wq.pt` itself (bcq.cli.main: load, encode + decode, finiteness check,
    # SQNR, atomic save) on a 2^24-scalar tensor, in this process, so start-up (imports) is not
    # counted. Best of 3, as the encode figures.
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "w.pt"), Path(tmp, "wq.pt")
        w = torch.randn(1 << 14, 1 << 10, generator=torch.Generator().manual_seed(2))
        torch.save(w, src)
        rt = 0.0
        for _ in range(3):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                rc = cli_main(["quantize", str(src), "-o", str(dst)])
            rt = max(rt, (1 << 24) / (time.perf_counter() - t))
            assert rc == 0
        assert torch.equal(torch.load(dst, weights_only=True), fake_quant(w, shipped_codebooks(DEFAULT_PRESET)))
    t = time.perf_counter()
    calibrate(synthetic_calibration_data(0), DEFAULT, iters=30, progress=False)
    cal = time.perf_counter() - t
    enc = out["encode"][f"lobcq:{DEFAULT_PRESET}"]
    # The same encode on one intra-op thread: on a shared machine a 2-thread team waits for its
    # descheduled member at every op, so this figure shows how much of the gap is the load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc1 = _rate(lambda t: encode(t, shipped_codebooks(DEFAULT_PRESET)), x)
    finally:
        torch.set_num_threads(threads)
    print(f"\nbcq quantize round trip (2^24 scalars, load + encode + decode + SQNR + save): {rt / 1e6:.1f} Mscalars/s "
          f"(target >= 15: {'PASS' if rt >= 15e6 else 'FAIL'})")
    print(f"LO-BCQ encode, default config: {enc / 1e6:.1f} Mscalars/s (target >= 20: {'PASS' if enc >= 20e6 else 'FAIL'})")
    print(f"LO-BCQ encode, default config, 1 thread: {enc1 / 1e6:.1f} Mscalars/s")
    print(f"LO-BCQ calibration (default config, synthetic mix, 2^16 blocks, 30 iterations, CPU): {cal:.1f} s")
    load = os.getloadavg()[0]
    print(f"measured with {torch.get_num_threads()} torch threads on {os.cpu_count()} cores, 1-minute load average "
          f"{load:.2f} at the end")
    out.update(quantize_round_trip_scalars_per_s=rt, calibration_s=cal, threads=torch.get_num_threads(),
               encode_default_1_thread=enc1,
               cores=os.cpu_count(), load_average_1min=load)
    return out


def _unit_cost(c, macs):
    """Per-MAC figures of one synthesis: LUT4, the honest LUT4 + 2 * CCU2C (a CCU2C is two LUT4s
    with carry logic), MACs per MULT18X18D and DP16KD per MAC."""
    return {**c, "macs_per_cycle": macs, "LUT4_per_MAC": c["LUT4"] / macs,
            "LUT4eq_per_MAC": (c["LUT4"] + 2 * c["CCU2"]) / macs,
            "MACs_per_MULT18": macs / c["MULT18X18D"] if c["MULT18X18D"] else None,
            "DP16KD_per_MAC": c["EBR"] / macs}


def _cost_row(label, flow, c):
    per_dsp = f"{c['MACs_per_MULT18']:.1f}" if c["MACs_per_MULT18"] else "-"
    return [label, flow, c["macs_per_cycle"], c["LUT4"], c["FF"], c["CCU2"], c["EBR"], c["MULT18X18D"],
            f"{c['LUT4_per_MAC']:.1f}", f"{c['LUT4eq_per_MAC']:.1f}", per_dsp, f"{c['DP16KD_per_MAC']:.2f}"]


COST_HEADER = ["unit", "flow", "MACs/cycle", "LUT4", "FF", "CCU2C", "DP16KD", "MULT18X18D", "LUT4/MAC",
               "(LUT4+2 CCU2C)/MAC", "MACs/MULT18", "DP16KD/MAC"]


def bench_hw():
    """Every unit in both Yosys flows (DSPs on, and ``synth_ecp5 -nodsp``), in one table, each unit
    built once with its defaults for both flows (bcq-dot: the scale multiply on carry chains).
    bcq-dot with ``scale_multiplier="dsp"`` (the scale multiply on one MULT18X18D) is listed too."""
    def bcq(bpc, mult="chain"):
        return lambda: BCQDot(BCQConfig(), blocks_per_cycle=bpc, scale_multiplier=mult)
    units = [("bcq_dot_b1", "bcq-dot B=1 (default config)", bcq(1), "bcq_dot"),
             ("bcq_dot_b2", "bcq-dot B=2 (default config)", bcq(2), "bcq_dot"),
             ("bcq_dot_b1_dsp", "bcq-dot B=1, scale_multiplier=dsp", bcq(1, "dsp"), "bcq_dot"),
             ("int8_mac_x8", "int8 MAC array x8 (baseline)", lambda: IntMac(8, lanes=8), "int_mac"),
             ("int8_mac_x16", "int8 MAC array x16 (baseline)", lambda: IntMac(8, lanes=16), "int_mac"),
             ("mxfp4_dot_x8", "mxfp4-dot x8 (baseline)", lambda: MXFP4Dot(lanes=8), "mx_dot")]
    rows, out = [], {}
    for key, label, make, name in units:
        for flow, dsp in (("dsp", True), ("nodsp", False)):
            dut = make()
            c = _unit_cost(synth_ecp5(dut, name, dsp=dsp), dut.macs_per_cycle)
            out.setdefault(key, {})[flow] = c
            rows.append(_cost_row(label, "DSP" if dsp else "-nodsp", c))
    table("Unit cost, Yosys synth_ecp5 (DSP flow and -nodsp), default config, the same build in both flows",
          COST_HEADER, rows)
    b1, b1d, mx, i8 = out["bcq_dot_b1"], out["bcq_dot_b1_dsp"], out["mxfp4_dot_x8"], out["int8_mac_x16"]

    def check(label, value, bound, fmt="{:.1f}", le="<="):
        met = value <= bound if le == "<=" else value >= bound
        return [label, fmt.format(value), f"{le} {fmt.format(bound)}", "yes" if met else "NO"]
    per_dsp = b1d["dsp"]["MACs_per_MULT18"] or 0.0
    targets = [check("LUT4/MAC (DSP flow) <= MXFP4's", b1["dsp"]["LUT4_per_MAC"], mx["dsp"]["LUT4_per_MAC"]),
               check("(LUT4+2 CCU2C)/MAC (DSP flow) <= MXFP4's", b1["dsp"]["LUT4eq_per_MAC"], mx["dsp"]["LUT4eq_per_MAC"]),
               check("  the same, scale_multiplier=dsp", b1d["dsp"]["LUT4eq_per_MAC"], mx["dsp"]["LUT4eq_per_MAC"]),
               check("LUT4/MAC (-nodsp) <= 0.75 x INT8 array's", b1["nodsp"]["LUT4_per_MAC"],
                     0.75 * i8["nodsp"]["LUT4_per_MAC"]),
               check("(LUT4+2 CCU2C)/MAC (-nodsp) <= 0.75 x INT8 array's", b1["nodsp"]["LUT4eq_per_MAC"],
                     0.75 * i8["nodsp"]["LUT4eq_per_MAC"]),
               check("(LUT4+2 CCU2C)/MAC (-nodsp) <= 0.6 x INT8 array's (goal)", b1["nodsp"]["LUT4eq_per_MAC"],
                     0.6 * i8["nodsp"]["LUT4eq_per_MAC"]),
               check("DP16KD per lane <= 0.5", b1["dsp"]["DP16KD_per_MAC"], 0.5, "{:.2f}"),
               check("MACs per MULT18X18D (DSP flow, scale_multiplier=dsp) >= 2 (goal)", per_dsp, 2.0, "{:.1f}", ">=")]
    table("Issue 13 unit targets (bcq-dot B=1)", ["target", "measured", "bound", "met"], targets)
    return out


def bench_sim():
    cfg = BCQConfig()
    build_dir = build(BCQDot(cfg, max_len=16 * cfg.array_len), "bcq_dot")
    with tempfile.TemporaryDirectory() as tmp:
        params = {"config": cfg.to_dict(), "blocks_per_cycle": 1, "max_len": 16 * cfg.array_len, "seed": 1,
                  "count": 5000, "stall_in": 0.0, "stall_out": 0.0, "replay": "bench"}
        run_cocotb(build_dir, "bcq_dot", "bcq.sim.tb_bcq_dot", test_dir=tmp, env={"BCQ_TB": json.dumps(params)})
        s = json.loads(Path(tmp, "throughput.json").read_text())
    v, c = s["vectors"] / s["seconds"], s["cycles"] / s["seconds"]
    table("Verilator + cocotb testbench speed (BCQ unit, default config, no stalls)",
          ["vectors", "cycles", "vectors/s", "cycles/s"], [[s["vectors"], s["cycles"], f"{v:.0f}", f"{c:.0f}"]])
    # The compiled harness on the same unit: 10^6 vectors with stalls, generation included.
    h = stress_config(STRESS_CONFIGS["bcq-default"], 10 ** 6, seed=1)
    table("Compiled harness speed (BCQ unit, default config, 10^6 vectors, random stalls, golden vectors "
          "generated in a second process; build apart)",
          ["testbench", "vectors", "wall s", "vectors/s", "sim CPU s", "gen CPU s", "generation overlap"],
          [["cocotb", s["vectors"], f"{s['seconds']:.1f}", f"{v:.0f}", "", "", ""],
           ["compiled harness", h["vectors"], f"{h['wall_s']:.1f}", h["vectors_per_s"], f"{h['sim_cpu_s']:.1f}",
            f"{h['gen_cpu_s']:.1f}", f"{h['generation_overlap']:.2f}"]])
    return {"vectors_per_s": v, "cycles_per_s": c, "harness": h}


def bench_bxp():
    v = torch.arange(-128, 128)
    X, W = (t.flatten() for t in torch.meshgrid(v, v, indexing="ij"))
    exact = (X * W).double()
    nz = exact != 0
    g = torch.Generator().manual_seed(0)
    xs = (torch.randn(4096, 64, generator=g) * 32).round().clamp(-128, 127).long()
    ws = (torch.randn(4096, 64, generator=g) * 32).round().clamp(-128, 127).long()
    dex = dot(xs, ws, cfg, "exact8").double()
    rows, out = [], {}
    for mode in cfg.modes:
        ppc = cfg.products_per_cycle(mode)
        if mode.precision == cfg.n_bits:
            rel = ((product(X, W, cfg, mode).double() - exact).abs()[nz] / exact.abs()[nz])
            drel = (dot(xs, ws, cfg, mode).double() - dex).abs() / (xs * ws).abs().sum(-1).double().clamp(min=1)
            e = {"pairs_mean": float(rel.mean()), "pairs_max": float(rel.max()),
                 "dot64_mean": float(drel.mean()), "dot64_max": float(drel.max())}
            cells = [f"{e['pairs_mean']:.4f}", f"{e['pairs_max']:.4f}", f"{e['dot64_mean']:.4f}", f"{e['dot64_max']:.4f}"]
        else:
            e, cells = {}, ["exact at its precision"] + [""] * 3
        out[mode.name] = {"products_per_cycle": ppc, "block_products": cfg.block_products(mode), **e}
        rows.append([mode.name, mode.precision, cfg.block_products(mode), ppc, *cells])
    table("Ax-BxP modes (N=8, k=2): throughput and error (relative to the exact product; all 2^16 "
          "signed 8-bit pairs; dot products: 4096 Gaussian int8 vectors of length 64, error / sum|x_i w_i|)",
          ["mode", "bits", "block products L", "products/cycle", "pairs mean rel", "pairs max rel",
           "dot64 mean rel", "dot64 max rel"], rows)
    keys = ("LUT4", "FF", "MULT18X18D", "CCU2")
    synth = {}
    rows = []
    seeds = (1, 2, 3)    # Fmax: nextpnr-ecp5 out of context on the -nodsp netlist, mean of 3 seeds
    for dsp in (True, False):
        tag = "" if dsp else " (-nodsp)"
        fs = () if dsp else seeds
        r = {"bxp_mac": synth_ecp5(BxPMac(cfg), "bxp_mac", dsp=dsp, fmax_seeds=fs),
             "bxp_mac_tree2": synth_ecp5(BxPMac(cfg, tree_stages=2), "bxp_mac", dsp=dsp, fmax_seeds=fs),
             "int8_mac_x1": synth_ecp5(IntMac(8, 1), "int_mac", dsp=dsp, fmax_seeds=fs),
             "int8_mac_x16": synth_ecp5(IntMac(8, 16), "int_mac", dsp=dsp)}
        synth["dsp" if dsp else "nodsp"] = r
        for unit, c in r.items():
            rows.append([unit + tag, *(c[k] for k in keys), f"{c['fmax_mhz']:.1f}" if "fmax_mhz" in c else "-"])
        rows.append([f"ratio bxp / int8 x1{tag}",
                     *(f"{r['bxp_mac'][k] / r['int8_mac_x1'][k]:.2f}" if r["int8_mac_x1"][k] else "-" for k in keys),
                     f"{r['bxp_mac']['fmax_mhz'] / r['int8_mac_x1']['fmax_mhz']:.2f}" if not dsp else "-"])
    table("Yosys synth_ecp5: reconfigurable MAC (1-16 products/cycle) vs plain 8x8 MACs; Fmax: nextpnr-ecp5 "
          "out of context (LFE5U-85F), -nodsp netlists, mean of 3 seeds",
          ["unit", "LUT4", "FF", "MULT18X18D", "CCU2C", "Fmax MHz"], rows)
    out["synth"] = synth
    return out


def bench_engine():
    """The board's engine (16 rows x 2 blocks on the ULX3S-85F): resources per MAC (synth_ecp5,
    DSP flow), and bit-exact layers on Verilator: MACs/cycle, GMAC/s at the board clock and the
    compute time of one layer per vector."""
    torch.manual_seed(0)
    board = BOARDS["ulx3s-85f"]
    lanes, bpc, clock = board["lanes"], board["blocks_per_cycle"], board["clock"]
    layers = {"nn.Linear 256x256": torch.nn.Linear(256, 256, bias=False).weight.detach(),
              "MiniLM L0 query 384x384": minilm_layer("encoder.layer.0.attention.self.query.weight")}
    eng = GEMV(EngineLayout(DEFAULT, lanes, bpc), max_rows=board["max_rows"], max_cols=board["max_cols"],
               multiplier_rows=board.get("multiplier_rows"))
    c = _unit_cost(synth_ecp5(eng, "gemv"), eng.macs_per_cycle)
    out = {"synth": c, "lanes": lanes, "blocks_per_cycle": bpc, "clock_hz": clock}
    table(f"Board engine ({lanes} rows x {bpc} blocks, up to {board['max_rows']} x {board['max_cols']}), "
          "synth_ecp5 DSP flow, whole engine (memories, decode, scaling, control)", COST_HEADER,
          [_cost_row("gemv (ulx3s-85f engine)", "DSP", c)])
    rows = []
    for name, w in layers.items():
        with tempfile.TemporaryDirectory() as tmp:
            r = simulate_layer(tmp, name.split()[0], w, lanes=lanes, blocks_per_cycle=bpc, vectors=2)
        per_vector = r["cycles"] / 2
        out[name] = {**{k: r[k] for k in ("rel_l2", "cycles", "macs_per_cycle", "peak_macs_per_cycle")},
                     "cycles_per_vector": per_vector, "us_per_vector": per_vector / clock * 1e6,
                     "gmacs": r["macs_per_cycle"] * clock / 1e9, "peak_gmacs": r["peak_macs_per_cycle"] * clock / 1e9}
        rows.append([name, f"{r['macs_per_cycle']:.1f} / {r['peak_macs_per_cycle']}", f"{r['rel_l2']:.4f}",
                     f"{per_vector:.0f}", f"{per_vector / clock * 1e6:.2f}",
                     f"{out[name]['gmacs']:.1f} / {out[name]['peak_gmacs']:.1f}"])
    table(f"Board engine on Verilator (2 vectors, bit-exact against the golden model; times at the "
          f"{clock / 1e6:g} MHz board clock, vector load included)",
          ["layer", "MACs/cycle (measured / peak)", "rel. L2 vs FP32", "cycles per vector", "us per vector",
           "GMAC/s (measured / peak)"], rows)
    return out


def bench_bxp_engine():
    """The Ax-BxP engine (4 rows): synth_ecp5 -nodsp LUT4 per product in each mode, and the
    shipped MiniLM query projection on Verilator in every mode (bit-exact, error vs FP32)."""
    layout = BxPLayout(cfg, 4)
    c = synth_ecp5(BxPEngine(layout, max_rows=16, max_cols=128), "bxp_engine", dsp=False)
    layer = "encoder.layer.0.attention.self.query.weight"
    with tempfile.TemporaryDirectory() as tmp:
        # Its first 48 rows (the build tests/test_bxp_engine_cocotb.py uses): the weight memory is
        # sized for exact8 (one column a beat in a word of 4 rows x 16 lanes), and the whole
        # layer's 36864 words take Verilator too long to compile.
        r = simulate_bxp_layer(tmp, "query", minilm_layer(layer)[:48], [m.name for m in cfg.modes], rows=4,
                               vectors=2)
    rows, out = [], {"synth": c, "layer": layer}
    for m in cfg.modes:
        v, peak = r[m.name], 4 * cfg.products_per_cycle(m)
        out[m.name] = {**v, "lut4_per_product": c["LUT4"] / peak}
        rows.append([m.name, peak, f"{v['products_per_cycle']:.1f}", f"{v['rel_l2']:.4f}", c["LUT4"],
                     f"{c['LUT4'] / peak:.1f}"])
    table(f"Ax-BxP engine, 4 rows (synth_ecp5 -nodsp up to 16 x 128: {c['LUT4']} LUT4, {c['FF']} FF, {c['EBR']} "
          f"DP16KD; Verilator: MiniLM {layer} rows 0-47 x 384, 2 vectors, bit-exact in every mode)",
          ["mode", "products/cycle (peak)", "measured", "rel. L2 vs FP32", "LUT4", "LUT4 per product"], rows)
    return out


def bench_minilm_bxp():
    r = evaluate_modes(cfg)
    base = r["modes"]["exact8"]
    rows = []
    for name, v in r["modes"].items():
        rows.append([name, v["products_per_cycle"], f"{v['cosine_mean']:.4f}", f"{v['cosine_min']:.4f}",
                     f"{100 * v['nearest_agreement']:.1f}", f"{100 * (base['nearest_agreement'] - v['nearest_agreement']):+.1f}",
                     f"{v['layer_rel_l2_mean']:.4f}", f"{v['layer_rel_l2_max']:.4f}"])
    table(f"MiniLM-L6, integer linear layers through the Ax-BxP golden model per mode ({r['sentences']} sentences; "
          "weights per channel, activations per token, symmetric at the mode's precision)",
          ["mode", "products/cycle", "cosine mean", "cosine min", "nearest-neighbour agreement %",
           "loss vs exact8 (points)", "layer rel. L2 mean", "layer rel. L2 max"], rows)
    approx = {n: v for n, v in r["modes"].items() if v["kind"] != "exact"}
    within = [n for n, v in approx.items() if base["nearest_agreement"] - v["nearest_agreement"] < 0.01]
    r["within_1pct_of_exact8"] = within
    print(f"\napproximate modes within 1 point of exact8's nearest-neighbour agreement: {', '.join(within) or 'none'}"
          f" (of {', '.join(approx)})")
    return r


def bench_minilm():
    r = evaluate(default_formats())
    rows = []
    for name, v in sorted(((k, v) for k, v in r.items() if isinstance(v, dict)), key=lambda kv: kv[1]["bits_per_scalar"]):
        ls = list(v["layers"].values())
        rows.append([name, f"{v['bits_per_scalar']:g}", f"{v['cosine_mean']:.4f}", f"{1 - v['cosine_mean']:.4f}",
                     f"{v['cosine_min']:.4f}", f"{v['spearman']:.4f}",
                     f"{sum(l['weight_sqnr_db'] for l in ls) / len(ls):.2f}",
                     f"{sum(l['act_sqnr_db'] for l in ls) / len(ls):.2f}"])
    table(f"MiniLM-L6 W4A4 (all linear layers), {r['sentences']} held-out sentences: embeddings vs FP32",
          ["format", "bits/scalar", "cosine mean", "1 - cosine", "cosine min", "Spearman (pair similarities)",
           "weight SQNR mean", "act SQNR mean"], rows)
    r["targets"] = minilm_targets(r)
    for line in r["targets"]["lines"]:
        print(line)
    return r


def minilm_targets(r):
    """The issue's quality targets, judged on the figures (never redefined here)."""
    nv = 1 - r["nvfp4"]["cosine_mean"]
    lines, out = [], {"nvfp4_one_minus_cos": nv}
    at45 = {k: v for k, v in r.items() if isinstance(v, dict) and v.get("bits_per_scalar", 99) <= 4.5 + 1e-9}
    best = max(at45, key=lambda k: at45[k]["cosine_mean"])
    for k in [f"lobcq:{DEFAULT_PRESET}:{source}{search}" for search in ("", ":search") for source in CODEBOOK_SOURCES]:
        if k not in r:
            continue
        e = 1 - r[k]["cosine_mean"]
        out[k] = {"one_minus_cos": e, "ratio_to_nvfp4": e / nv, "half_of_nvfp4": e <= nv / 2,
                  "goal_0_985": r[k]["cosine_mean"] >= 0.985}
        lines.append(f"{k}: 1 - cos {e:.4f} = {e / nv:.2f} x NVFP4's {nv:.4f} (target <= 0.5: "
                     f"{'PASS' if e <= nv / 2 else 'FAIL'}); cosine {r[k]['cosine_mean']:.4f} (goal >= 0.985: "
                     f"{'PASS' if r[k]['cosine_mean'] >= 0.985 else 'FAIL'})")
    d = f"lobcq:{DEFAULT_PRESET}:{DEFAULT_SOURCE}"
    others = {k: v for k, v in at45.items() if not k.startswith("lobcq:")}
    rival = max(others, key=lambda k: others[k]["cosine_mean"])
    out["best_at_or_below_4_5_bits"] = best
    out["default_beats_every_other_format"] = r[d]["cosine_mean"] > others[rival]["cosine_mean"]
    lines.append(f"best cosine at <= 4.5 bits/scalar: {best} ({at45[best]['cosine_mean']:.4f}); the default {d} "
                 f"({r[d]['cosine_mean']:.4f}) vs the best other format, {rival} ({others[rival]['cosine_mean']:.4f}): "
                 f"{'PASS' if out['default_beats_every_other_format'] else 'FAIL'}")
    out["lines"] = lines
    return out


def bench_fpga():
    """Full builds (Yosys + nextpnr + packer) of both board tops: utilization and Fmax."""
    rows, out = [], {}
    for board in ("ulx3s-85f", "icebreaker"):
        r = build_bitstream(board, "build")
        out[board] = {k: r[k] for k in ("fmax_mhz", "target_mhz", "met", "seconds", "engine", "cells")}
        luts = r["cells"].get("TRELLIS_COMB", r["cells"].get("ICESTORM_LC", ["-", "-"]))
        rows.append([board, f"{r['fmax_mhz']:.1f}", f"{r['target_mhz']:.0f}", "yes" if r["met"] else "NO",
                     f"{luts[0]} / {luts[1]}", f"{r['seconds']:.0f}"])
    table("nextpnr full builds (engine + host link)", ["board", "Fmax MHz", "clock MHz", "met", "LUT cells", "build s"], rows)
    return out


def bench_board():
    """The ULX3S-85F board build over several nextpnr seeds, read from the report that
    ``make bitstream SEEDS="1 2 3" BUILD_JOBS=3`` wrote (``build/ulx3s-85f/report.json``, or the
    file named by ``BCQ_BUILD_REPORT``): post-route Fmax per seed, utilization, and GMAC/s at the
    clock it was built for (no build here: one takes 30 to 60 minutes on a 2-core machine)."""
    path = Path(os.environ.get("BCQ_BUILD_REPORT", "build/ulx3s-85f/report.json"))
    if not path.is_file():
        print(f"\nbench board: no build report at {path} (run `make bitstream SEEDS=\"1 2 3\" BUILD_JOBS=3` "
              "first); section skipped")
        return None
    reports = json.loads(path.read_text())
    reports = reports if isinstance(reports, list) else [reports]
    board = reports[0]["board"]
    eng = reports[0]["engine"]
    macs = eng["lanes"] * eng["blocks_per_cycle"] * DEFAULT.block_len
    clock = reports[0]["target_mhz"]
    rows = [[r["seed"], f"{r['fmax_mhz']:.1f}", f"{r['target_mhz']:.1f}", "yes" if r["met"] else "NO",
             (r.get("worst_path") or {}).get("from", "-"), (r.get("worst_path") or {}).get("to", "-")] for r in reports]
    table(f"{board} post-route Fmax per nextpnr seed ({path})", ["seed", "Fmax MHz", "clock MHz", "met",
                                                                "worst path from", "to"], rows)
    cells = reports[0]["cells"]
    names = ["TRELLIS_COMB", "TRELLIS_FF", "TRELLIS_RAMW", "DP16KD", "MULT18X18D"]
    table(f"{board} utilization (seed {reports[0]['seed']})", ["cell", "used", "available", "%"],
          [[n, cells[n][0], cells[n][1], f"{100 * cells[n][0] / cells[n][1]:.0f}"] for n in names if n in cells])
    fmax = [r["fmax_mhz"] for r in reports]
    out = {"board": board, "seeds": [r["seed"] for r in reports], "fmax_mhz": fmax, "clock_mhz": clock,
           "met_all": all(r["met"] for r in reports), "macs_per_cycle": macs,
           "peak_gmacs_at_clock": macs * clock / 1e3, "peak_gmacs_at_min_fmax": macs * min(fmax) / 1e3, "cells": cells,
           "worst_paths": [r.get("worst_path") for r in reports]}
    print(f"\n{board}: {macs} MAC/cycle at {clock:g} MHz = {out['peak_gmacs_at_clock']:.1f} GMAC/s peak "
          f"({out['peak_gmacs_at_min_fmax']:.1f} at the lowest Fmax); "
          f"Fmax over seeds {', '.join(f'{f:.1f}' for f in fmax)} MHz ({'all meet' if out['met_all'] else 'NOT all meet'} "
          f"the {clock:g} MHz clock)")
    return out


SECTIONS = {"quality": bench_quality, "minilm": bench_minilm, "speed": bench_speed, "hw": bench_hw, "bxp": bench_bxp,
            "bxp_engine": bench_bxp_engine, "minilm_bxp": bench_minilm_bxp, "engine": bench_engine,
            "sim": bench_sim, "board": bench_board, "encoder": bench_encoder, "encoder-hw": bench_encoder_hw,
            "fpga": bench_fpga}


def main(argv):
    picked = argv or list(SECTIONS)
    unknown = [p for p in picked if p not in SECTIONS]
    if unknown:
        sys.exit(f"bench: unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}")
    RESULTS.mkdir(exist_ok=True)
    results = {}
    for name in picked:
        got = SECTIONS[name]()
        if got is not None:   # None: the section had nothing to measure (said why)
            results[name] = got
    path = RESULTS / "bench.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    previous.update(results)
    path.write_text(json.dumps(previous, indent=1))
    print(f"\nwrote {path}")
    report.main()


if __name__ == "__main__":
    main(sys.argv[1:])
