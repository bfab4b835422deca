"""Bench sections of the on-chip activation encoder (``python -m bench encoder encoder-hw``).

``encoder``: SQNR of the integer encoder specification (``bcq.sw.formats.encoder_int``, what the
gateware computes) against the float encoder (``bcq.sw.formats.lobcq``) on BF16 inputs: the
synthetic sets and MiniLM-L6's linear-layer activations. Both encoders see the same BF16 tensor;
the integer one takes the power-of-two tensor scale ``2**ceil(log2 ts)`` (a register on chip), so
the table gives the float encoder at its own FP32 ``ts`` and at that same power of two.

``encoder-hw``: Yosys ``synth_ecp5`` cells of the encoder per scalar per cycle for Nc = 1, 4, 8, 16
at the width the ULX3S engine needs, beside that engine.
"""
import dataclasses
import math

import torch

from bcq.hw.bcq_encoder import BCQEncoder, lanes_to_feed
from bcq.hw.board import BOARDS
from bcq.hw.gemv import GEMV
from bcq.sim.synth import synth_ecp5
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.calibdata import synthetic_calibration_data
from bcq.sw.formats.codebooks import Codebooks, shipped_codebooks
from bcq.sw.formats.config import DEFAULT
from bcq.sw.formats.encoder_int import encode_int
from bcq.sw.formats.lobcq import decode, encode
from bcq.sw.formats.quantizers import sqnr_db

__all__ = ["bench_encoder", "bench_encoder_hw", "ts_exp_for"]


def ts_exp_for(x, codebooks):
    """The host's power-of-two tensor scale: the smallest ``2**k`` at or above the float
    encoder's FP32 tensor scale (so no array needs a scale beyond the largest)."""
    amax = float(x.abs().max())
    cfg = codebooks.config
    ts = amax / (cfg.entry_max * cfg.scale.max_value) if amax > 0 else 1.0
    return max(-128, min(127, math.ceil(math.log2(ts))))


def _row(name, x, cb):
    xb = x.to(torch.bfloat16)
    ref = xb.double()
    k = ts_exp_for(ref, cb)
    qf = encode(xb, cb)
    fixed = Codebooks(dataclasses.replace(cb.config, tensor_scale=False), cb.entries)
    qf2 = encode(ref * 2.0 ** -k, fixed)
    qi = encode_int(xb, cb, ts_exp=k)
    s_float = sqnr_db(ref, decode(qf, torch.float64))
    s_float2 = sqnr_db(ref, decode(qf2, torch.float64) * 2.0 ** k)
    s_int = sqnr_db(ref, decode(qi, torch.float64))
    agree = float((qi.selectors == qf2.selectors).double().mean())
    return {"name": name, "scalars": x.numel(), "ts_exp": k, "float_fp32_ts": s_float, "float_pow2_ts": s_float2,
            "int": s_int, "delta_same_ts": s_int - s_float2, "delta_fp32_ts": s_int - s_float, "selectors_agree": agree}


def _print(title, rows):
    print(f"\n## {title}\n")
    print("| set | scalars | ts_exp | float (FP32 ts) dB | float (2^k ts) dB | integer dB | int - float (same ts) | "
          "int - float (FP32 ts) | selectors agree |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['scalars']} | {r['ts_exp']} | {r['float_fp32_ts']:.3f} | {r['float_pow2_ts']:.3f} | "
              f"{r['int']:.3f} | {r['delta_same_ts']:+.3f} | {r['delta_fp32_ts']:+.3f} | {r['selectors_agree']:.4f} |")


def bench_encoder():
    out = {}
    configs = {"w4a4-4.5": DEFAULT, "w4a4-4.5 nearest": dataclasses.replace(DEFAULT, scale_rule="nearest")}
    for label, cfg in configs.items():
        cb = Codebooks(cfg, shipped_codebooks("w4a4-4.5", "synthetic").entries)
        rows = [_row(n, x, cb) for n, x in zip(("gaussian", "laplace", "student-t(3)"),
                                                synthetic_calibration_data(seed=7, rows=2048))]
        _print(f"Activation encoder, integer spec vs float encoder: synthetic sets, {label}", rows)
        out[f"synthetic {label}"] = rows
    try:
        from bcq.sw.host.minilm import minilm_calibration_data
        tensors, names = minilm_calibration_data(DEFAULT.array_len)
    except Exception as e:  # the optional model package
        print(f"MiniLM activations: skipped ({e})")
        return out
    for label, cfg in configs.items():
        cb = Codebooks(cfg, shipped_codebooks("w4a4-4.5", "minilm").entries)
        # The first 256 rows (tokens) of every linear layer's input: all 36 layers, a bounded run.
        rows = [_row(n, t[:256], cb) for t, n in zip(tensors, names) if n.endswith(":input")]
        worst = min(rows, key=lambda r: r["delta_same_ts"])
        mean = sum(r["delta_same_ts"] for r in rows) / len(rows)
        _print(f"Activation encoder: MiniLM-L6 linear-layer inputs, {label}", rows)
        line = (f"MiniLM {label}: int - float at the same tensor scale: mean {mean:+.3f} dB, worst {worst['delta_same_ts']:+.3f} dB "
                f"({worst['name']}); target within 0.1 dB: {'PASS' if abs(worst['delta_same_ts']) <= 0.1 else 'FAIL'}")
        print(line)
        out[f"minilm {label}"] = {"rows": rows, "line": line}
    return out


def _engine_cost(board):
    """The board's engine in the same flow (``python -m bench engine`` builds the same GEMV)."""
    layout = EngineLayout(DEFAULT, board["lanes"], board["blocks_per_cycle"])
    eng = GEMV(layout, max_rows=board["max_rows"], max_cols=board["max_cols"],
               multiplier_rows=board.get("multiplier_rows"))
    return synth_ecp5(eng, "gemv"), eng.macs_per_cycle


def bench_encoder_hw(engine=True):
    """The encoder the ULX3S engine needs (``lanes_to_feed``: one scalar a cycle into its 2-block
    beats) for Nc = 1, 4, 8 (default), 16, and an 8-lane one (a block a cycle) for scale, beside
    the engine it feeds; synth_ecp5 DSP flow as ``bench hw``."""
    board = BOARDS["ulx3s-85f"]
    bpc = board["blocks_per_cycle"]
    layout = EngineLayout(DEFAULT, board["lanes"], bpc)
    lanes = lanes_to_feed(layout, board["max_rows"])
    rows, out = [], {"lanes": lanes}
    header = ["unit", "Nc", "scalars/cycle", "LUT4", "FF", "CCU2C", "MULT18X18D", "DP16KD", "LUT4/scalar",
              "FF/scalar", "CCU2C/scalar", "MULT18/scalar"]
    for nc, w in [(1, lanes), (4, lanes), (8, lanes), (16, lanes), (8, 8)]:
        cfg = dataclasses.replace(DEFAULT, n_codebooks=nc)
        dut = BCQEncoder(cfg, blocks_per_cycle=bpc, lanes=w)
        c = synth_ecp5(dut, "bcq_encoder")
        per = {k: c[k] / w for k in ("LUT4", "FF", "CCU2", "MULT18X18D")}
        out[f"nc{nc}_lanes{w}"] = {"scalars_per_cycle": w, **c, "per_scalar": per}
        rows.append(["encoder", nc, w, c["LUT4"], c["FF"], c["CCU2"], c["MULT18X18D"], c["EBR"], f"{per['LUT4']:.0f}",
                     f"{per['FF']:.0f}", f"{per['CCU2']:.0f}", f"{per['MULT18X18D']:.1f}"])
        print(f"synth encoder Nc={nc} lanes={w}: {c}", flush=True)
    if engine:
        c, macs = _engine_cost(board)
        out["engine"] = {"macs_per_cycle": macs, **c}
        rows.append([f"engine it feeds (GEMV {board['lanes']} rows x {bpc} blocks, {macs} MAC/cycle)",
                     DEFAULT.n_codebooks, "", c["LUT4"], c["FF"], c["CCU2"], c["MULT18X18D"], c["EBR"], "", "", "", ""])
    print(f"\n## Activation encoder beside the ULX3S engine, Yosys synth_ecp5 (DSP flow), Lb=8, LA=64, INT6, E4M3; "
          f"the engine needs {lanes} scalar(s)/cycle (lanes_to_feed: B*Lb / ceil(max_rows / rows) = "
          f"{bpc * DEFAULT.block_len} / {-(-board['max_rows'] // board['lanes'])})\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")
    return out
