"""The simulated board: the host driver's bytes through the UART pins of the full accelerator
top on Verilator, bit-exact against the golden model."""
import json

import pytest
import torch

from bcq.hw.board import UARTAccelerator
from bcq.sim.runner import build, run_cocotb
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.host.image import write_image

pytestmark = [pytest.mark.verilator]


@pytest.mark.xdist_group("verilator")
def test_driver_through_uart(tmp_path, seed):
    cb = default_codebooks()
    layout = EngineLayout(cb.config, 2, 1)
    write_image(tmp_path / "img", {"fc": torch.randn(6, 128, generator=torch.Generator().manual_seed(seed))}, cb, layout)
    # Both rows on fabric bit planes (the ULX3S engine mixes them with multiplier rows; the
    # engine tests cover both and the mix).
    dut = UARTAccelerator(layout, divisor=8, max_rows=8, max_cols=128, build_id=0xB0A7D, multiplier_rows=0)
    build_dir = build(dut, "board")
    params = {"image": str(tmp_path / "img"), "layer": "fc", "divisor": 8, "vectors": 2, "seed": seed,
              "build_id": 0xB0A7D}
    run_cocotb(build_dir, "board", "bcq.sim.tb_board", test_dir=tmp_path / "run", env={"BOARD_TB": json.dumps(params)})
