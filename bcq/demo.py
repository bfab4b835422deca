"""The main job in one command (``make demo`` / ``bcq demo``): a real layer's weights -> LO-BCQ
image -> engine Verilog with the image baked in -> Verilator simulation -> bit-exact check
against the golden model, and the error against FP32."""

from pathlib import Path
import time

from bcq.hw.units import write_verilog
from bcq.sim.engine_run import simulate_layer
from bcq.sw.formats.config import DEFAULT
from bcq.sw.host.models import minilm_layer, minilm_path

LAYER = "encoder.layer.0.attention.self.query.weight"


def run_demo(output="out/demo", *, lanes=4, vectors=4, waves=False):
    out = Path(output).resolve()
    t0 = time.perf_counter()
    weight = minilm_layer(LAYER)
    print(f"[1/3] layer {LAYER} {tuple(weight.shape)} of all-MiniLM-L6-v2 (package {minilm_path().parent.parent.name})")
    r = simulate_layer(out, LAYER, weight, lanes=lanes, vectors=vectors, baked=True, waves=waves)
    print(f"[2/3] LO-BCQ image -> {r['image']}/ (bcq image show {r['image']})")
    info = write_verilog("gemv", out / "rtl", config=DEFAULT, image=r["image"],
                         layer=LAYER, options=["rom=true"])
    print(f"      {info.split('; ports')[0]}")
    print(f"[3/3] Verilator: {vectors} activation vectors x {weight.shape[0]} rows, bit-exact against the golden "
          f"model; {r['cycles']} cycles ({r['macs_per_cycle']:.1f} MACs/cycle of {r['peak_macs_per_cycle']})")
    print(f"\nrelative L2 error of the engine's output vs FP32 F.linear: {r['rel_l2']:.4f}")
    print(f"image: {r['image']}/   Verilog: {out / 'rtl' / 'gemv.v'}   simulation log: {r['sim_log']}")
    if waves:
        dumps = sorted(Path(r["sim_log"]).parent.glob("dump.*"))
        print(f"waveform: {dumps[0] if dumps else 'none written'}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return r
