"""cocotb testbench of the simulated board: the host driver (bcq.sw.host.driver.Accelerator, unchanged)
talks to bcq.hw.board.UARTAccelerator through its UART pins on Verilator; results are checked
against the golden model.

``driver_through_uart``: BOARD_TB = JSON {image, layer, divisor, vectors, seed, build_id, bf16}: the
fixed-point GEMV, error replies, and with ``bf16`` the BF16 path (GEMV_BF16) on random and edge
vectors, each output bit-exact against bcq.sw.formats.golden_bf16.

``layer_bf16`` (``make demo``): BOARD_RUN = JSON {image, layer, divisor, activations, out}: a board
whose memories hold the layer (baked in), the driver's gemv_bf16 on each vector of the
activations file, checked bit-exact; the outputs and cycle count go to ``out``.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, with_timeout
from cocotb.utils import get_sim_time
import torch

from bcq.sw.contract import protocol as P
from bcq.sw.formats.encoder_int import float_bits, tensor_scale_exp
from bcq.sw.formats.golden import dot_fixed
from bcq.sw.formats.golden_bf16 import gemv_bf16
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


async def start(dut, env):
    """Clock and reset the board; returns the test's parameters (JSON in ``env``), its image's
    layer and the UART pins."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 3)
    p = json.loads(os.environ[env])
    img = read_image(p["image"])
    return p, img, img.layers[p["layer"]], UARTPins(dut, p["divisor"])


def bf16_cases(cols, seed, vectors):
    """(name, x, ts_exp) of the BF16 checks: random vectors, then the edges (ts_exp None: the
    driver's default)."""
    gen = torch.Generator().manual_seed(seed)
    cases = [(f"random {seed + v}", torch.randn(cols, generator=gen) * 4.0 ** (v % 3 - 1), None) for v in range(vectors)]
    huge = torch.randn(cols, generator=gen)
    huge[3] = 3.0e38                                  # near BF16's largest: rows overflow to +-Inf
    special = torch.randn(cols, generator=gen)
    special[[0, 1, cols // 2]] = torch.tensor([float("inf"), float("-inf"), float("nan")])
    nan = torch.randn(cols, generator=gen)
    nan[5] = float("nan")                             # reads as 0
    sub = torch.randn(cols, generator=gen) * 1e-39    # BF16 subnormals
    sat = torch.randn(cols, generator=gen)
    return cases + [("all zeros", torch.zeros(cols), None), ("a huge value", huge, None),
                    ("+-Inf and NaN", special, None), ("one NaN", nan, None), ("subnormals", sub, None),
                    ("subnormals, ts_exp=-110: they round to +-0", sub, -110),
                    ("saturating: ts_exp 4 below the default", sat, "default-4")]


def check_bf16(layer, name, x, ts_exp, got):
    want, _ = gemv_bf16(layer.weights, x, ts_exp=ts_exp)
    g, w = got.view(torch.int16).tolist(), want.view(torch.int16).tolist()
    assert g == w, f"BF16 vector '{name}' (ts_exp {ts_exp}): board {[hex(v & 0xFFFF) for v in g]}, golden " \
                   f"{[hex(v & 0xFFFF) for v in w]}"


@cocotb.test()
async def driver_through_uart(dut):
    p, img, layer, link = await start(dut, "BOARD_TB")
    xs = [encode(torch.randn(layer.shape[1], generator=torch.Generator().manual_seed(p["seed"] + v)), img.codebooks)
          for v in range(p["vectors"])]

    @bridge
    def host():
        acc = Accelerator(link)
        info = acc.status()
        assert (info.build_id, info.lanes) == (p["build_id"], img.layout.lanes), info
        # One write fills the engine's codebook table and the encoder's (both start empty).
        acc.write_codebooks(img.codebooks)
        acc.write_layer(layer)
        results = [acc.gemv_fixed(x, img.layout) for x in xs]
        bf16 = []
        if p.get("bf16"):
            assert info.encoder_lanes == p["bf16"], info
            for name, x, ts in bf16_cases(layer.shape[1], p["seed"], p["vectors"]):
                if ts == "default-4":
                    ts = tensor_scale_exp(float_bits(x), img.layout.config) - 4
                bf16.append((name, x, ts, acc.gemv_bf16(x, ts_exp=ts)))
            # A vector that is not whole block arrays is refused (bad length), and nothing changes.
            short = P.gemv_bf16_payload(layer.shape[0], 0, 0, [0x3F80] * (img.layout.config.array_len - 1))
            link.write(P.request(P.CMD_GEMV_BF16, short))
            errors_bf16 = [P.parse_reply(link.read(6))[0]]
            name, x, ts, _ = bf16[0]
            bf16.append((name + ", again", x, ts, acc.gemv_bf16(x, ts_exp=ts)))
        else:
            errors_bf16 = []
        # An unknown command and a corrupted frame get error replies, and the link goes on.
        link.write(P.request(0x6B))
        errors = [P.parse_reply(link.read(6))[0]]
        bad = bytearray(P.request(P.CMD_STATUS))
        bad[-1] ^= 0xFF
        link.write(bytes(bad))
        errors.append(P.parse_reply(link.read(6))[0])
        return results, errors, acc.status(), bf16, errors_bf16

    results, errors, info2, bf16, errors_bf16 = await host()
    for v, (x, got) in enumerate(zip(xs, results)):
        assert got == dot_fixed(layer.weights, x).tolist(), f"vector {v} differs from the golden model"
    assert errors == [P.STATUS_UNKNOWN_COMMAND, P.STATUS_BAD_CRC]
    assert info2.build_id == p["build_id"]
    for name, x, ts, got in bf16:
        check_bf16(layer, name, x, ts, got)
    assert errors_bf16 == ([P.STATUS_BAD_LENGTH] if p.get("bf16") else [])
    dut._log.info("driver -> UART -> engine: %d fixed-point and %d BF16 vectors x %d rows bit-exact", len(xs),
                  len(bf16), layer.shape[0])


@cocotb.test()
async def layer_bf16(dut):
    p, _, layer, link = await start(dut, "BOARD_RUN")
    xs = torch.load(p["activations"])
    t0 = get_sim_time("ns")

    @bridge
    def host():
        acc = Accelerator(link)
        acc.use_layer(layer)          # baked into the memories at elaboration
        return [acc.gemv_bf16(x) for x in xs]

    ys = await host()
    cycles = int((get_sim_time("ns") - t0) // 10)
    for v, (x, y) in enumerate(zip(xs, ys)):
        check_bf16(layer, f"activation {v}", x, None, y)
    torch.save(torch.stack(ys), p["out"])
    dut._log.info("driver -> UART -> encoder -> engine -> BF16: %d vectors x %d rows bit-exact, %d cycles",
                  len(xs), layer.shape[0], cycles)
    with open(p["out"] + ".json", "w") as f:
        json.dump({"cycles": cycles}, f)
