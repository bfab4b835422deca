"""The simulated board: the host driver's bytes through the UART pins of the full accelerator
top on Verilator, bit-exact against the golden model: the fixed-point GEMV, and GEMV_BF16 (BF16 in,
on-chip encoder, engine, on-chip BF16 rounding, BF16 out) on random and edge vectors."""
import json

import pytest
import torch

from bcq.hw.board import UARTAccelerator
from bcq.sim.runner import build, run_cocotb
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.host.image import write_image

pytestmark = [pytest.mark.verilator]


def test_driver_through_uart(tmp_path, seed):
    cb = default_codebooks()
    layout = EngineLayout(cb.config, 2, 1)
    # A power-of-two tensor scale: the board's BF16 output adds its exponent.
    write_image(tmp_path / "img", {"fc": torch.randn(6, 128, generator=torch.Generator().manual_seed(seed))}, cb, layout,
                pow2_tensor_scale=True)
    # Both rows on fabric bit planes (the ULX3S engine mixes them with multiplier rows; the
    # engine tests cover both and the mix). The encoder starts with empty codebooks: the
    # driver's one codebook write must fill its table and the engine's.
    dut = UARTAccelerator(layout, divisor=8, max_rows=8, max_cols=128, build_id=0xB0A7D, multiplier_rows=0,
                          encoder_lanes=1)
    build_dir = build(dut, "board")
    params = {"image": str(tmp_path / "img"), "layer": "fc", "divisor": 8, "vectors": 2, "seed": seed,
              "build_id": 0xB0A7D, "bf16": 1}
    run_cocotb(build_dir, "board", "bcq.sim.tb_board", test_dir=tmp_path / "run", testcase="driver_through_uart",
               env={"BOARD_TB": json.dumps(params)})
