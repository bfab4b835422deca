"""Board tops: the matrix-vector engine behind a UART host link, for the Radiona ULX3S (ECP5-85F)
and, reduced, the iCEBreaker (iCE40UP5K); ``UARTAccelerator`` is the same logic with plain pins
for simulation."""

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.config import DEFAULT
from bcq.sw.formats.errors import BCQError
from bcq.sw.host.image import read_image

from .host_link import Accelerator
from .uart import UARTRx, UARTTx

__all__ = ["UARTAccelerator", "BoardTop", "BOARDS", "ecp5_pll_params"]

# board -> (platform factory, engine parameters, system clock in Hz). The ULX3S engine is
# 16 rows x 2 blocks (256 MAC/cycle) and a 512-deep weight memory (256 x 512 matrices) that fits
# one DP16KD depth. Rows 0-7 multiply on 64 of the 85F's 156 MULT18X18D (two rows per
# multiplier), rows 8-15 add bit planes in the fabric: with all 16 rows on 145 multipliers (93%)
# the placer had to stretch block RAM -> multiplier routes across the die (45.7 MHz estimated
# after placement, router2 not converging in 30 minutes). The PLL makes 75 MHz (issue 13's bound;
# post-route Fmax per nextpnr seed in README "On a board").
# encoder_lanes: BF16 scalars per cycle of the activation encoder behind GEMV_BF16
# (bcq.hw.bcq_encoder.lanes_to_feed: 1 keeps the ULX3S engine fed at 256 rows); absent: no encoder
# (the iCEBreaker's block RAMs and LCs are mostly taken by its engine; not tried).
BOARDS = {
    "ulx3s-85f": dict(platform="amaranth_boards.ulx3s:ULX3S_85F_Platform", lanes=16, blocks_per_cycle=2,
                      max_rows=256, max_cols=512, clock=75e6, multiplier_rows=8, encoder_lanes=1),
    "icebreaker": dict(platform="amaranth_boards.icebreaker:ICEBreakerPlatform", lanes=1, blocks_per_cycle=1,
                       max_rows=32, max_cols=128, clock=12e6),
}

ECP5_PLL_VCO = 600e6   # inside the EHXPLLL's 400..800 MHz VCO range


def ecp5_pll_params(clock_in, clock_out):
    """EHXPLLL dividers for ``clock_in`` -> ``clock_out`` (Hz) through a 600 MHz VCO with CLKOP as
    feedback (as ``ecppll`` computes them): ``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``,
    ``CLKOP_CPHASE``. Raises :class:`BCQError` for a clock the VCO cannot make exactly."""
    op_div, fb_div = ECP5_PLL_VCO / clock_out, clock_out / clock_in
    if op_div != int(op_div) or fb_div != int(fb_div) or not 1 <= op_div <= 128:
        raise BCQError(f"the ECP5 PLL cannot make {clock_out / 1e6:g} MHz from {clock_in / 1e6:g} MHz "
                       f"through a {ECP5_PLL_VCO / 1e6:g} MHz VCO; allowed: {clock_in / 1e6:g} MHz * n dividing "
                       f"{ECP5_PLL_VCO / 1e6:g} MHz")
    return {"CLKI_DIV": 1, "CLKFB_DIV": int(fb_div), "CLKOP_DIV": int(op_div), "CLKOP_CPHASE": int(op_div) // 2 - 1}


class UARTAccelerator(wiring.Component):
    """UART (8N1) -> protocol engine -> matrix-vector engine: the board's logic with plain pins,
    so that a simulation drives exactly what the board runs.

    Parameters
    ----------
    layout, max_rows, max_cols, codebooks, image, build_id, multiplier_rows, encoder_lanes
        Those of :class:`bcq.hw.host_link.Accelerator` (``encoder_lanes``: the BF16 path).
    divisor : int
        Clock cycles per UART bit (clock / baud rate).
    timeout_cycles : int or None
        Silence that drops a half-received frame; default 64 byte times.

    Members
    -------
    rx : ``In(1, init=1)``
        UART receive pin (idle high).
    tx : ``Out(1, init=1)``
        UART transmit pin.
    busy : ``Out(1)``
        High while a request is being carried out or answered.
    """

    def __init__(self, layout: EngineLayout, *, divisor, max_rows, max_cols, build_id=0, timeout_cycles=None,
                 codebooks=None, image=None, multiplier_rows=None, encoder_lanes=None):
        self.core = Accelerator(layout, max_rows=max_rows, max_cols=max_cols, build_id=build_id,
                                timeout_cycles=timeout_cycles or 64 * 10 * divisor, codebooks=codebooks, image=image,
                                multiplier_rows=multiplier_rows, encoder_lanes=encoder_lanes)
        self.rx_unit, self.tx_unit = UARTRx(divisor), UARTTx(divisor)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core, m.submodules.uart_rx, m.submodules.uart_tx = self.core, self.rx_unit, self.tx_unit
        wiring.connect(m, self.rx_unit.o, self.core.i)
        wiring.connect(m, self.core.o, self.tx_unit.i)
        m.d.comb += [self.rx_unit.rx.eq(self.rx), self.tx.eq(self.tx_unit.tx), self.busy.eq(self.core.busy)]
        return m


class BoardTop(Elaboratable):
    """A board's top level: clock (a PLL to the engine clock on the ULX3S), I/O buffers on the
    UART pins and a LED, and :class:`UARTAccelerator`.

    Parameters
    ----------
    board : str
        A key of :data:`BOARDS` (``ulx3s-85f``, ``icebreaker``), which fixes the engine's size
        and clock.
    baudrate : int
        UART bit rate.
    build_id : int
        32-bit identity reported by STATUS.
    image, layer : path, str or None
        Bake this weight image's layer (default: its first) and its codebooks into the block
        RAMs (they can still be rewritten over the link); without them the memories start empty.
    """

    def __init__(self, board, *, baudrate=115200, build_id=0, image=None, layer=None):
        self.board, self.params = board, BOARDS[board]
        self.baudrate, self.build_id = baudrate, build_id
        self.layout = EngineLayout(DEFAULT, self.params["lanes"], self.params["blocks_per_cycle"])
        self.codebooks = self.layer = None
        if image is not None:
            img = read_image(image, expect=self.layout)
            name = layer or next(iter(img.layers))
            if name not in img.layers:
                raise BCQError(f"image {image} has no layer {name!r}; layers: {', '.join(img.layers)}")
            rows, cols = img.layers[name].shape
            if rows > self.params["max_rows"] or cols > self.params["max_cols"]:
                raise BCQError(f"layer {name} ({rows} x {cols}) exceeds the {board} engine's "
                               f"{self.params['max_rows']} x {self.params['max_cols']}")
            self.codebooks, self.layer = img.codebooks, img.layers[name]

    def elaborate(self, platform):
        m = Module()
        p = self.params
        clk_hz = p["clock"]
        m.domains.sync = ClockDomain("sync")
        if self.board == "ulx3s-85f":
            clk25 = platform.request("clk25", dir="-")
            locked = Signal()
            clk = Signal()
            pll = ecp5_pll_params(25e6, clk_hz)
            m.submodules.pll = Instance(
                "EHXPLLL", a_FREQUENCY_PIN_CLKI="25", a_FREQUENCY_PIN_CLKOP=f"{clk_hz / 1e6:g}", a_ICP_CURRENT="12",
                a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD", p_CLKI_DIV=pll["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_DIV=pll["CLKOP_DIV"], p_CLKOP_CPHASE=pll["CLKOP_CPHASE"], p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=pll["CLKFB_DIV"],
                i_RST=0, i_STDBY=0, i_CLKI=clk25.io, o_CLKOP=clk, i_CLKFB=clk,
                o_CLKINTFB=Signal(), i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
            # nextpnr derives the clock constraint from the PLL and the board's 25 MHz clock.
            m.d.comb += [ClockSignal("sync").eq(clk), ResetSignal("sync").eq(~locked)]
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
            m.d.comb += ClockSignal("sync").eq(clk_buf.i)
        m.submodules.acc = acc = UARTAccelerator(self.layout, divisor=round(clk_hz / self.baudrate),
                                                 max_rows=p["max_rows"], max_cols=p["max_cols"], build_id=self.build_id,
                                                 codebooks=self.codebooks, image=self.layer,
                                                 multiplier_rows=p.get("multiplier_rows"),
                                                 encoder_lanes=p.get("encoder_lanes"))
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.led_buf = led_buf = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += [acc.rx.eq(rx_buf.i), tx_buf.o.eq(acc.tx), led_buf.o.eq(acc.busy)]
        if self.board == "ulx3s-85f":
            m.submodules.txen_buf = txen = io.Buffer("o", platform.request("uart_tx_enable", 0, dir="-"))
            m.d.comb += txen.o.eq(1)
        return m
