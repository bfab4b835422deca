"""cocotb testbench of the simulated board: the host driver (bcq.sw.host.driver.Accelerator, unchanged)
talks to bcq.hw.board.UARTAccelerator through its UART pins on Verilator; results are checked
against the golden model.

BOARD_TB = JSON {image, layer, divisor, vectors, seed}.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, with_timeout
import torch

from bcq.sw.contract import protocol as P
from bcq.sw.formats.golden import dot_fixed
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.driver import Accelerator
from bcq.sw.host.image import read_image


class UARTPins:
    """A transport (write/read) that is the far end of the DUT's rx/tx pins."""

    def __init__(self, dut, divisor):
        self.dut, self.d = dut, divisor
        self.rx_bytes = Queue()
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        while True:
            await FallingEdge(self.dut.tx)
            await ClockCycles(self.dut.clk, self.d // 2)
            value = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, self.d)
                value |= int(self.dut.tx.value) << i
            await ClockCycles(self.dut.clk, self.d)
            assert int(self.dut.tx.value) == 1, "missing stop bit"
            self.rx_bytes.put_nowait(value)

    async def _send(self, data):
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await ClockCycles(self.dut.clk, self.d)

    async def _recv(self, n):
        out = bytearray()
        for _ in range(n):
            try:
                out.append(await with_timeout(self.rx_bytes.get(), 20 * 10 * self.d * 1000, "ns"))
            except Exception:
                break
        return bytes(out)

    def write(self, data):
        resume(self._send)(data)

    def read(self, n):
        return resume(self._recv)(n)


@cocotb.test()
async def driver_through_uart(dut):
    p = json.loads(os.environ["BOARD_TB"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 3)
    img = read_image(p["image"])
    layer = img.layers[p["layer"]]
    link = UARTPins(dut, p["divisor"])
    xs = [encode(torch.randn(layer.shape[1], generator=torch.Generator().manual_seed(p["seed"] + v)), img.codebooks)
          for v in range(p["vectors"])]

    @bridge
    def host():
        acc = Accelerator(link)
        info = acc.status()
        assert (info.build_id, info.lanes) == (p["build_id"], img.layout.lanes), info
        acc.write_codebooks(img.codebooks)
        acc.write_layer(layer)
        results = [acc.gemv_fixed(x, img.layout) for x in xs]
        # An unknown command and a corrupted frame get error replies, and the link goes on.
        link.write(P.request(0x6B))
        errors = [P.parse_reply(link.read(6))[0]]
        bad = bytearray(P.request(P.CMD_STATUS))
        bad[-1] ^= 0xFF
        link.write(bytes(bad))
        errors.append(P.parse_reply(link.read(6))[0])
        return results, errors, acc.status()

    results, errors, info2 = await host()
    for v, (x, got) in enumerate(zip(xs, results)):
        assert got == dot_fixed(layer.weights, x).tolist(), f"vector {v} differs from the golden model"
    assert errors == [P.STATUS_UNKNOWN_COMMAND, P.STATUS_BAD_CRC]
    assert info2.build_id == p["build_id"]
    dut._log.info("driver -> UART -> engine: %d vectors x %d rows bit-exact", len(xs), layer.shape[0])
