"""One layer through the matrix-vector engine on Verilator: image, build, cocotb run, and the
figures (bit-exact check inside the testbench, error against FP32, cycles). Used by the tests,
``make demo`` and ``make bench``. :func:`simulate_board_bf16`: the same layer BF16 in, BF16 out
through the simulated board (UART, host driver, on-chip encoder and BF16 rounding)."""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from bcq.hw.board import UARTAccelerator
from bcq.hw.gemv import GEMV
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden import to_value
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.image import read_image, write_image

from .runner import build, run_cocotb


def rel_l2(y, ref):
    """The relative L2 error of ``y`` against the reference ``ref`` (in float64)."""
    ref = ref.double()
    return float((y.double() - ref).norm() / ref.norm())


def simulate_layer(workdir, name, weight, *, lanes=4, blocks_per_cycle=1, vectors=4, seed=0, stall=0.0, baked=False,
                   waves=False, max_rows=384, max_cols=384):
    """Returns {rel_l2, cycles, macs_per_cycle, peak_macs_per_cycle, image, sim_log, verilog?}.

    ``baked``: the image initializes the memories at elaboration (a design per layer, no write
    ports); otherwise one design up to ``max_rows`` x ``max_cols`` is loaded through its ports."""

    work = Path(workdir).resolve()
    cb = default_codebooks()
    layout = EngineLayout(cb.config, lanes, blocks_per_cycle)
    write_image(work / "image", {name: weight}, cb, layout)
    img = read_image(work / "image", layout)
    xs = torch.randn(vectors, weight.shape[1], generator=torch.Generator().manual_seed(seed))
    torch.save(xs, work / "activations.pt")
    if baked:
        dut = GEMV(layout, max_rows=weight.shape[0], max_cols=weight.shape[1], codebooks=cb,
                   image=img.layers[name], rom=True)
    else:
        dut = GEMV(layout, max_rows=max_rows, max_cols=max_cols)
    build_dir = build(dut, "gemv", waves=waves)
    params = {"image": str(work / "image"), "layer": name, "activations": str(work / "activations.pt"),
              "load": "baked" if baked else "ports", "seed": seed, "stall": stall,
              "out": str(work / "results.json"), "acc_bits": dut.acc_bits}
    try:
        log = run_cocotb(build_dir, "gemv", "bcq.sim.tb_gemv", test_dir=work / "sim",
                         env={"GEMV_TB": json.dumps(params)}, waves=waves)
    except AssertionError as e:
        raise BCQError(f"the engine did not match the golden model; see {work / 'sim' / 'sim.log'}: {str(e)[:300]}") from None
    res = json.loads((work / "results.json").read_text())
    acc = torch.tensor(res["values"]).reshape(vectors, -1)
    q = img.layers[name].weights
    y_hw = torch.stack([to_value(acc[v], q, encode(xs[v], cb)) for v in range(vectors)])
    y_fp = F.linear(xs.double(), weight.double())
    return {"rel_l2": rel_l2(y_hw, y_fp), "cycles": res["cycles"],
            "macs_per_cycle": vectors * weight.numel() / res["cycles"], "peak_macs_per_cycle": dut.macs_per_cycle,
            "image": work / "image", "sim_log": log, "build_dir": build_dir}


def simulate_board_bf16(workdir, name, weight, activations, *, lanes=4, blocks_per_cycle=1, encoder_lanes=1,
                        divisor=4, waves=False):
    """The layer ``weight`` BF16 in, BF16 out through the simulated board: a
    :class:`bcq.hw.board.UARTAccelerator` sized for the layer, its image (power-of-two tensor
    scale) and codebooks baked into the memories, and the host driver's ``gemv_bf16`` on each row
    of ``activations`` [V, cols] through the UART pins (``divisor`` clock cycles per bit). The
    testbench checks every output bit-exact against :mod:`bcq.sw.formats.golden_bf16`.

    Returns {rel_l2 (the BF16 outputs against FP32 ``F.linear``), outputs (bfloat16 [V, rows]),
    fp32 (that ``F.linear``, float64 [V, rows]), cycles, image, sim_log, build_dir}."""
    work = Path(workdir).resolve()
    cb = default_codebooks()
    layout = EngineLayout(cb.config, lanes, blocks_per_cycle)
    rows, cols = weight.shape
    write_image(work / "image_bf16", {name: weight}, cb, layout, pow2_tensor_scale=True)
    layer = read_image(work / "image_bf16", layout).layers[name]
    xs = activations.detach().to(torch.float32).cpu()
    torch.save(xs, work / "activations_bf16.pt")
    dut = UARTAccelerator(layout, divisor=divisor, max_rows=rows, max_cols=cols, codebooks=cb, image=layer,
                          encoder_lanes=encoder_lanes)
    build_dir = build(dut, "board", waves=waves)
    out = work / "outputs_bf16.pt"
    params = {"image": str(work / "image_bf16"), "layer": name, "divisor": divisor,
              "activations": str(work / "activations_bf16.pt"), "out": str(out)}
    try:
        log = run_cocotb(build_dir, "board", "bcq.sim.tb_board", test_dir=work / "board_sim", testcase="layer_bf16",
                         env={"BOARD_RUN": json.dumps(params)}, waves=waves)
    except AssertionError as e:
        raise BCQError(f"the board did not match the golden model; see {work / 'board_sim' / 'sim.log'}: "
                       f"{str(e)[:300]}") from None
    ys = torch.load(out)
    y_fp = F.linear(xs.double(), weight.double())
    return {"rel_l2": rel_l2(ys, y_fp), "outputs": ys, "fp32": y_fp,
            "cycles": json.loads(Path(str(out) + ".json").read_text())["cycles"], "image": work / "image_bf16",
            "sim_log": log, "build_dir": build_dir}
