"""The main job in one command (``make demo`` / ``bcq demo``): a real layer's weights -> LO-BCQ
image -> engine Verilog with the image baked in -> Verilator simulation -> bit-exact check
against the golden model, and the error against FP32; then the same layer BF16 in, BF16 out
through the simulated board (host driver, UART, on-chip activation encoder, engine, on-chip BF16
rounding) on real MiniLM activations, bit-exact against the golden model."""

from pathlib import Path
import time

import torch

from bcq.hw.units import write_verilog
from bcq.sim.engine_run import rel_l2, simulate_board_bf16, simulate_layer
from bcq.sw.formats.config import DEFAULT
from bcq.sw.formats.golden import dot_fixed, to_value
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.image import read_image
from bcq.sw.host.minilm import minilm_layer_inputs
from bcq.sw.host.models import minilm_layer, minilm_path

LAYER = "encoder.layer.0.attention.self.query.weight"
# The sentence whose tokens' activations (the layer's real inputs) go through the board.
SENTENCE = "Four-bit arithmetic you can trust, from the golden model down to the gates."


def run_demo(output="out/demo", *, lanes=4, vectors=4, waves=False):
    out = Path(output).resolve()
    t0 = time.perf_counter()
    weight = minilm_layer(LAYER)
    print(f"[1/4] layer {LAYER} {tuple(weight.shape)} of all-MiniLM-L6-v2 (package {minilm_path().parent.parent.name})")
    r = simulate_layer(out, LAYER, weight, lanes=lanes, vectors=vectors, baked=True, waves=waves)
    print(f"[2/4] LO-BCQ image -> {r['image']}/ (bcq image show {r['image']})")
    info = write_verilog("gemv", out / "rtl", config=DEFAULT, image=r["image"],
                         layer=LAYER, options=["rom=true"])
    print(f"      {info.split('; ports')[0]}")
    print(f"[3/4] Verilator: {vectors} activation vectors x {weight.shape[0]} rows, bit-exact against the golden "
          f"model; {r['cycles']} cycles ({r['macs_per_cycle']:.1f} MACs/cycle of {r['peak_macs_per_cycle']})")
    print(f"      relative L2 error of the engine's output vs FP32 F.linear: {r['rel_l2']:.4f}")

    # BF16 in, BF16 out on the board: real activations of this layer, one token per vector.
    tokens = minilm_layer_inputs(LAYER, SENTENCE)
    xs = tokens[:vectors]
    b = simulate_board_bf16(out / "board", LAYER, weight, xs, lanes=lanes, waves=waves)
    # The same tokens through the FP32-input path (float encoder, exact output) for comparison.
    w = read_image(b["image"]).layers[LAYER].weights
    xq = [encode(x, w.codebooks) for x in xs]
    y_fixed = torch.stack([to_value(dot_fixed(w, q), w, q) for q in xq])
    print(f"[4/4] the board, BF16 in -> BF16 out (host driver -> UART -> activation encoder -> engine -> BF16 "
          f"rounding -> UART), on Verilator: {len(xs)} of the {tokens.shape[0]} tokens of \"{SENTENCE}\" "
          f"(the layer's real inputs) x {weight.shape[0]} rows, every output bit-exact against the golden model "
          f"(encoder_int -> dot_fixed -> float_bits); {b['cycles']} cycles, mostly the UART")
    print(f"      relative L2 error of the board's BF16 output vs FP32 F.linear: {b['rel_l2']:.4f} "
          f"(FP32 input, exact output, same tokens: {rel_l2(y_fixed, b['fp32']):.4f})")
    print(f"\nimage: {r['image']}/ (board: {b['image']}/)   Verilog: {out / 'rtl' / 'gemv.v'}   simulation logs: "
          f"{r['sim_log']}, {b['sim_log']}")
    if waves:
        dumps = sorted(Path(r["sim_log"]).parent.glob("dump.*")) + sorted(Path(b["sim_log"]).parent.glob("dump.*"))
        print(f"waveforms: {', '.join(map(str, dumps)) if dumps else 'none written'}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return r, b
