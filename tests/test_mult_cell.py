"""``registered_mult``'s ECP5 form (a MULT18X18D instance with its own registers, what every
board build's multipliers are) simulated on Verilator with the cell model of sim/ecp5_cells.v,
against Python products; the Amaranth simulator and the other tests run its fabric form."""
import json

from amaranth import Module, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
import pytest

from bcq.hw.export import verilog_text
from bcq.hw.pipeline import registered_mult
from bcq.sim.runner import build_text, run_cocotb

pytestmark = [pytest.mark.verilator]


class _ECP5:
    family = "ecp5"


class Mult(wiring.Component):
    def __init__(self, a_bits, b_bits, b_unsigned):
        self.a_bits, self.b_bits, self.b_unsigned = a_bits, b_bits, b_unsigned
        b_shape = unsigned(b_bits) if b_unsigned else signed(b_bits)
        super().__init__({"a": In(signed(a_bits)), "b": In(b_shape), "ce": In(1),
                          "p": Out(signed(a_bits + b_bits + b_unsigned))})

    def elaborate(self, platform):
        m = Module()
        # As the engine's scale multiply passes an unsigned mantissa: one more signed bit.
        m.d.comb += self.p.eq(registered_mult(m, "prod", self.a, self.b, self.a_bits, self.b_bits + self.b_unsigned,
                                              platform, ce=self.ce))
        return m


# (a bits, b bits, b unsigned): the engine's packed row pair (18 x 6), the scale multiply
# (18 x 8 unsigned), the encoder's error term (6 x 17).
@pytest.mark.parametrize("a_bits,b_bits,b_unsigned", [(18, 6, False), (18, 8, True), (6, 17, False)])
def test_instance_form_matches_products(a_bits, b_bits, b_unsigned, seed, tmp_path):
    text = verilog_text(Mult(a_bits, b_bits, b_unsigned), "mult", platform=_ECP5())
    assert "MULT18X18D" in text and "REG_INPUTA_CLK" in text
    name = f"mult_{a_bits}_{b_bits}_{int(b_unsigned)}"
    build_dir = build_text(text.replace("module mult(", f"module {name}("), name)
    params = {"a_bits": a_bits, "b_bits": b_bits, "b_unsigned": b_unsigned, "cycles": 3000, "seed": seed}
    run_cocotb(build_dir, name, "bcq.sim.tb_mult", test_dir=tmp_path, env={"BCQ_TB": json.dumps(params)})


def test_too_wide_for_one_cell_warns_and_falls_back():
    """A 19-bit operand no longer fits one MULT18X18D: the fabric form, with a warning that
    names the product; 18 bits still take the instance, silently."""
    with pytest.warns(UserWarning, match=r"registered_mult prod: a 19 x 6-bit signed product does not fit"):
        text = verilog_text(Mult(19, 6, False), "mult", platform=_ECP5())
    assert "MULT18X18D" not in text
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "MULT18X18D" in verilog_text(Mult(18, 6, False), "mult", platform=_ECP5())
