"""Plain fixed-precision integer MAC array: the baseline the reconfigurable units are priced
against (same stream interface and pipeline style, no reconfigurability).
"""

from amaranth import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bcq.sw.formats.errors import ConfigError

from .pipeline import Pipeline, tree_sum

__all__ = ["IntMac"]


class IntMac(wiring.Component):
    """``lanes`` signed ``n_bits`` x ``n_bits`` products per cycle, summed and accumulated per vector.

    Parameters
    ----------
    n_bits : int
        Operand width.
    lanes : int
        Products per cycle.
    max_len : int
        Most beats per vector; sets ``acc_bits``.

    Members
    -------
    i : ``In(stream.Signature({x: [lanes] signed, w: [lanes] signed, last}))``
        Operand beats; ``last`` ends a vector.
    o : ``Out(stream.Signature(signed(acc_bits)))``
        One sum per vector.

    Latency ``latency`` (= 4) cycles; one beat per cycle.
    """

    latency = 4

    def __init__(self, n_bits=8, lanes=1, *, max_len=4096):
        for name, v in (("n_bits", n_bits), ("lanes", lanes), ("max_len", max_len)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(name, v, "a positive integer")
        self.n_bits, self.lanes, self.max_len = n_bits, lanes, max_len
        layout = data.StructLayout({"x": data.ArrayLayout(signed(n_bits), lanes),
                                    "w": data.ArrayLayout(signed(n_bits), lanes), "last": 1})
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(signed(self.acc_bits)))})

    @property
    def macs_per_cycle(self):
        return self.lanes

    @property
    def acc_bits(self):
        return (self.max_len * self.lanes * (1 << (2 * self.n_bits - 2))).bit_length() + 1

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o)
        reg = pipe.reg

        p = self.i.payload
        v1, l1 = reg("s1_valid", 1, self.i.valid), reg("s1_last", 1, p.last)
        x1 = [reg(f"s1_x{j}", signed(self.n_bits), p.x[j]) for j in range(self.lanes)]
        w1 = [reg(f"s1_w{j}", signed(self.n_bits), p.w[j]) for j in range(self.lanes)]
        prods = [reg(f"s2_p{j}", signed(2 * self.n_bits), x1[j] * w1[j]) for j in range(self.lanes)]
        v2, l2 = reg("s2_valid", 1, v1), reg("s2_last", 1, l1)
        s3 = reg("s3_sum", signed(2 * self.n_bits + self.lanes.bit_length()), tree_sum(prods))
        v3, l3 = reg("s3_valid", 1, v2), reg("s3_last", 1, l2)
        pipe.accumulate(s3, v3, l3, self.acc_bits)
        return m
