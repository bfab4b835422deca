"""8N1 UART receiver and transmitter with byte streams."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.formats.errors import ConfigError

__all__ = ["UARTRx", "UARTTx"]


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ConfigError("divisor", divisor, "clock cycles per bit, an integer >= 4")
    return divisor


class UARTRx(wiring.Component):
    """Receives 8N1 frames on ``rx`` (sampled mid-bit) into ``o``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    rx : ``In(1, init=1)``
        The line (idle high); synchronized by two flip-flops.
    o : ``Out(stream.Signature(8))``
        Received bytes; a byte appears in the middle of its stop bit.
    overrun : ``Out(1)``
        Pulses when a byte not yet taken is overwritten by the next one.
    frame_error : ``Out(1)``
        Pulses when a stop bit is missing (the byte is dropped).
    """

    def __init__(self, divisor):
        self.divisor = _check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "overrun": Out(1), "frame_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        rx_meta = Signal(init=1)
        m.d.sync += [rx_meta.eq(self.rx), rx.eq(rx_meta)]  # two-flop synchronizer
        timer = Signal(range(d + d // 2 + 1))
        bit = Signal(range(10))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.overrun.eq(0), self.frame_error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += [timer.eq(d + d // 2 - 1), bit.eq(0)]  # to the middle of data bit 0
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq((rx << 7) | (shreg >> 1)), bit.eq(bit + 1), timer.eq(d - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Sends each byte of ``i`` as an 8N1 frame on ``tx``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send; taken when the previous frame has ended.
    tx : ``Out(1, init=1)``
        The line: start bit, 8 data bits LSB first, stop bit, ``divisor`` cycles each.
    """

    def __init__(self, divisor):
        self.divisor = _check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        bits = Signal(10)
        count = Signal(range(11))
        busy = Signal()
        m.d.comb += [busy.eq((count != 0) | (timer != 0)), self.i.ready.eq(~busy)]
        with m.If(~busy & self.i.valid):
            m.d.sync += [bits.eq((1 << 9) | (self.i.payload << 1)), count.eq(10)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(count != 0):  # start bit, 8 data bits LSB first, stop bit: d clocks each
            m.d.sync += [self.tx.eq(bits[0]), bits.eq(bits >> 1), count.eq(count - 1), timer.eq(d - 1)]
        return m
