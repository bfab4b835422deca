"""Fast Amaranth-simulator check of the BCQ dot-product unit (for quick iteration; the
Verilator/cocotb runs in test_bcq_dot_cocotb.py are the thorough ones)."""
import random

from amaranth import Value
from amaranth.sim import Simulator
from helpers import exactly
import pytest
import torch

from bcq.hw.bcq_dot import BCQDot
from bcq.sim.amaranth_streams import run_streams, write_words
from bcq.sim.vectors import make_cases, random_codebooks
from bcq.sw.contract.beats import bcq_vector_beats
from bcq.sw.contract.tables import pair_table_words
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import ConfigError

# (config, B, scale multiplier, cells): the chain multiplier (the -nodsp build) on both scale
# formats; the plain-RTL chains once (the CCU2C netlist runs in the Verilator tests).
CONFIGS = [(BCQConfig(), 1, "dsp", "model"), (BCQConfig(block_len=4, n_codebooks=4), 1, "dsp", "model"),
           (BCQConfig(n_codebooks=1), 1, "dsp", "model"), (BCQConfig(scale_format="e8m0"), 1, "dsp", "model"),
           (BCQConfig(), 2, "dsp", "model"), (BCQConfig(), 1, "chain", "model"),
           (BCQConfig(scale_format="e8m0"), 1, "chain", "model"), (BCQConfig(entry_bits=8), 1, "chain", "rtl")]


def run(dut, cases, codebooks, seed, stall_in=0.3, stall_out=0.3):
    async def write_codebooks(ctx):
        if not dut.codebook_rom:
            await write_words(ctx, dut.cbw, pair_table_words(codebooks))
    beats = [b for case in cases for b in bcq_vector_beats(case.w, case.x, dut.geometry)]
    return run_streams(dut, beats, len(cases), random.Random(seed), stall_in, stall_out, setup=write_codebooks)


# The Amaranth simulator runs the Amaranth model of the CCU2C cells (cells="model"; the
# Verilator tests run the CCU2C netlist itself, tests/test_chains.py proves the two equal).
@pytest.mark.parametrize("cfg,bpc,mult,cells", CONFIGS, ids=lambda v: str(v))
def test_matches_golden_with_stalls(cfg, bpc, mult, cells, seed):
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    # Up to 4 block arrays and 6 random vectors besides the directed ones: the Python simulator
    # runs some 30 cycles/s on this unit; the volume (10^4 vectors per configuration, up to 16
    # arrays) runs on Verilator in tests/test_harness.py.
    dut = BCQDot(cfg, blocks_per_cycle=bpc, max_len=4 * cfg.array_len, scale_multiplier=mult, cells=cells)
    cases = make_cases(cfg, cb, seed=seed, count=6, max_len=4 * cfg.array_len)
    got = run(dut, cases, cb, seed)
    for k, (case, g) in enumerate(zip(cases, got)):
        assert g == case.expected, f"case {k} {case.describe()}"
    assert len(got) == len(cases)


def test_rom_variant_and_latency(default_cb, seed):
    cfg = default_cb.config
    dut = BCQDot(cfg, codebooks=default_cb, codebook_rom=True, max_len=256, cells="model")
    assert not hasattr(dut, "cbw")
    cases = make_cases(cfg, default_cb, seed=seed, count=3, max_len=256)[:4]
    assert run(dut, cases, default_cb, seed) == [c.expected for c in cases]
    # Latency: with no stalls, o.valid rises `latency` cycles after the edge taking `last`.
    case = cases[-1]
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        for beat in bcq_vector_beats(case.w, case.x, dut.geometry):
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), beat)
            await ctx.tick()
            cycle += 1
        ctx.set(dut.i.valid, 0)
        last_edge = cycle
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycle += 1
        seen["latency"] = cycle - last_edge + 1
        seen["value"] = ctx.get(dut.o.payload)

    sim.add_testbench(tb)
    sim.run()
    assert seen == {"latency": dut.latency, "value": case.expected}


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_hardware_parameters():
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: blocks_per_cycle=3; allowed: a divisor of blocks_per_array=8")):
        BCQDot(BCQConfig(), blocks_per_cycle=3)
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: max_len=100; allowed: a positive multiple of array_len=64")):
        BCQDot(BCQConfig(), max_len=100)
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: codebook_rom=True; allowed: only with codebooks given")):
        BCQDot(BCQConfig(), codebook_rom=True)

    with pytest.raises(ConfigError, match=exactly(
            "invalid config: scale_multiplier='lut'; allowed: ('dsp', 'chain')")):
        BCQDot(BCQConfig(), scale_multiplier="lut")
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: cells='sim'; allowed: ('ccu2c', 'model', 'rtl')")):
        BCQDot(BCQConfig(), cells="sim")
