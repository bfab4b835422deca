"""``bcq trace``: one vector through the golden model and the RTL, stage by stage.

The golden side is ``bcq.sw.formats.golden.trace`` (every intermediate of the dot product, named
in ``TRACE_STAGES``). The RTL side is read through the *trace-taps protocol*
(docs/arithmetic.md section 6): a traced unit has a method ``trace_taps()`` which, once the
design is elaborated, returns ``{stage: (values, valid)}``; on every cycle where ``valid`` is
high, ``values`` (Amaranth values, read as integers of their shapes) hold the stage's next
values in stream order. The tool drives the vector's beats back to back with the output always
ready (the Amaranth simulator; one vector is quick), collects each tapped stage, and compares
stage by stage in pipeline order: the first stage that differs is where to look.
"""

from dataclasses import dataclass

from amaranth import Value
from amaranth.sim import Simulator
import numpy as np
import torch

from bcq.hw.units import build_unit
from bcq.sw.contract.packing import words_to_int
from bcq.sw.contract.tables import pair_table_words
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden import TRACE_STAGES
from bcq.sw.formats.golden import trace as golden_trace

from .amaranth_streams import write_words
from .bulk import bcq_beats, random_operand
from .vectors import random_codebooks

__all__ = ["TraceResult", "rtl_trace", "trace_vector", "format_trace", "random_pair", "trace_unit", "TRACED_UNITS"]

# Units of bcq.hw.units whose gateware implements trace_taps().
TRACED_UNITS = ("bcq-dot",)


@dataclass
class TraceResult:
    """Golden and RTL values per stage (flat lists in stream order) and where they first differ.

    Members
    -------
    golden, rtl : dict
        Stage -> list of ints; ``rtl`` has the stages the design taps.
    widths : dict
        Stage -> values per RTL event (a beat's lanes, 1 per array...), for display.
    first_difference : (stage, index) or None
        The first stage, in pipeline order, whose values differ, and the first differing index.
    title : str
    """

    golden: dict
    rtl: dict
    widths: dict
    first_difference: tuple | None
    title: str = ""


def rtl_trace(dut, beats, *, setup=None, max_cycles=100000):
    """Drive ``beats`` (packed ints) into ``dut.i`` back to back, ``o`` always ready, after
    ``setup(ctx)``; returns ({stage: flat values}, {stage: values per event}) from
    ``dut.trace_taps()`` up to the first output."""
    sim = Simulator(dut)          # elaborates the design: the taps exist from here on
    taps = dut.trace_taps()
    got = {name: [] for name in taps}
    widths = {name: len(values) for name, (values, _) in taps.items()}
    sim.add_clock(1e-8)

    async def bench(ctx):
        if setup is not None:
            await setup(ctx)
        ctx.set(dut.o.ready, 1)
        k = 0
        for _ in range(max_cycles):
            ctx.set(dut.i.valid, k < len(beats))
            if k < len(beats):
                ctx.set(Value.cast(dut.i.payload), beats[k])
            for name, (values, valid) in taps.items():
                if ctx.get(valid):
                    got[name].extend(int(ctx.get(v)) for v in values)
            output = "output" in taps and got["output"]
            if k < len(beats) and ctx.get(dut.i.ready):
                k += 1
            await ctx.tick()
            if output:
                return
        raise AssertionError(f"no output within {max_cycles} cycles")

    sim.add_testbench(bench)
    sim.run()
    return got, widths


def _codebook_setup(dut, codebooks):
    async def setup(ctx):
        if getattr(dut, "codebook_rom", True) or not hasattr(dut, "cbw"):
            return
        await write_words(ctx, dut.cbw, pair_table_words(codebooks))
    return setup


def trace_vector(dut, w, x, *, golden=None, title=""):
    """Trace the 1-D encoded operands ``w``, ``x`` through ``dut`` (a unit with ``trace_taps``,
    ``geometry`` and ``arith``, e.g. :class:`bcq.hw.bcq_dot.BCQDot`; its codebooks are written
    through ``cbw`` first unless it has them as a ROM) and through ``golden`` (the golden model's
    trace; a parameter so that tests can break a stage on purpose). Scale codes decode as the
    hardware does (``any_code``)."""
    geometry = dut.geometry
    beats = bcq_beats(w[None], x[None], dut.i.payload.shape(), geometry)
    rtl, widths = rtl_trace(dut, [words_to_int(b) for b in beats], setup=_codebook_setup(dut, w.codebooks))
    gold = (golden or golden_trace)(w, x, beat_len=geometry.scalars_per_beat, arith=dut.arith, any_code=True)
    first = None
    for stage in TRACE_STAGES:
        if stage in rtl and stage in gold and rtl[stage] != gold[stage]:
            a, b = gold[stage], rtl[stage]
            index = next((k for k, (u, v) in enumerate(zip(a, b)) if u != v), min(len(a), len(b)))
            first = (stage, index)
            break
    return TraceResult(gold, rtl, widths, first, title)


def _rows(values, width):
    return [values[k:k + width] for k in range(0, len(values), width)] or [[]]


def format_trace(result: TraceResult):
    """Golden and RTL side by side, stage by stage; the first differing stage is marked."""
    out = [result.title] if result.title else []
    for stage, what in TRACE_STAGES.items():
        gold = result.golden.get(stage, [])
        rtl = result.rtl.get(stage)
        cell = max([len(str(v)) for v in gold + (rtl or [])] + [1])
        width = result.widths.get(stage, 1)
        width = min(width, 8) if width > 1 else (8 if cell <= 8 else 4)
        if rtl is None:
            status = "not tapped by this design"
        elif rtl == gold:
            status = "same"
        elif result.first_difference and result.first_difference[0] == stage:
            status = f"DIFFERS at index {result.first_difference[1]}   <<< first stage that differs"
        else:
            status = "differs"
        out.append(f"== {stage}: {what} ({len(gold)} values) == {status}")
        g_rows, r_rows = _rows(gold, width), _rows(rtl or [], width)
        for k in range(max(len(g_rows), len(r_rows) if rtl is not None else 0)):
            g = g_rows[k] if k < len(g_rows) else []
            r = r_rows[k] if k < len(r_rows) else []
            left = " ".join(f"{v:>{cell}}" for v in g)
            mark = "" if rtl is None else ("   " if g == r else " !!")
            right = "" if rtl is None else " | rtl " + " ".join(f"{v:>{cell}}" for v in r)
            out.append(f"  [{k * width:>4}] golden {left:<{(cell + 1) * min(width, len(gold)) - 1}}{right}{mark}")
    if result.first_difference:
        stage, index = result.first_difference
        out.append(f"first difference: stage {stage}, index {index}: golden "
                   f"{_at(result.golden[stage], index)}, rtl {_at(result.rtl[stage], index)}")
    else:
        out.append("every tapped stage equals the golden model")
    return "\n".join(out)


def _at(values, index):
    return values[index] if index < len(values) else "(missing)"


def random_pair(codebooks, seed, arrays=1, scales=None):
    """A random operand pair of ``arrays`` block arrays (indices, selectors, scale codes drawn
    from ``seed`` as the stress harness draws them); ``scales`` = (w code, x code) forces every
    scale code (any 8-bit code: the edge contract applies)."""
    rng = np.random.default_rng(seed)
    n = arrays * codebooks.config.array_len
    w, x = random_operand(codebooks, rng, 1, n)[0], random_operand(codebooks, rng, 1, n)[0]
    if scales is not None:
        w.scales[:], x.scales[:] = scales
    return w, x


def trace_unit(unit="bcq-dot", config=None, options=(), *, codebooks=None, seed=0, arrays=1, scales=None):
    """What ``bcq trace`` does: build ``unit`` (a traced unit of ``bcq.hw.units``), draw a random
    vector pair (codebooks from ``codebooks`` or random from ``seed``), trace it. Returns a
    :class:`TraceResult` (``format_trace`` prints it)."""
    config = config or BCQConfig()
    if unit not in TRACED_UNITS:
        raise BCQError(f"unit {unit!r} has no trace taps; traced units: {', '.join(TRACED_UNITS)}")
    if not isinstance(arrays, int) or arrays < 1:
        raise BCQError(f"--arrays {arrays}: a positive number of block arrays is needed")
    if scales is not None and not all(isinstance(c, int) and 0 <= c <= 255 for c in scales):
        raise BCQError(f"--scales {scales}: two 8-bit scale codes (0..255) are needed")
    if codebooks is not None and codebooks.config != config:
        raise BCQError(f"--config does not match the codebooks' config ({codebooks.config.describe()})")
    cb = codebooks or random_codebooks(config, torch.Generator().manual_seed(seed))
    # The Amaranth simulator cannot run FPGA primitives: the carry chains run as the Amaranth
    # model of the same CCU2C cells (hw/chains.py; tests/test_chains.py proves them equal).
    if not any(o.strip().startswith("cells") for o in options):
        options = (*options, "cells=model")
    dut, _ = build_unit(unit, config, options, codebooks=cb if codebooks is not None else None)
    if arrays * config.array_len > dut.arith.max_len:
        raise BCQError(f"--arrays {arrays}: the unit's max_len={dut.arith.max_len} holds at most "
                       f"{dut.arith.max_len // config.array_len} block arrays")
    w, x = random_pair(cb, seed, arrays, scales)
    title = (f"bcq trace: {unit}, {config.describe()}, {dut.geometry.blocks_per_cycle} block(s)/cycle; one vector of "
             f"{w.shape[0]} scalars ({arrays} block array{'s' if arrays > 1 else ''}), seed {seed}; "
             f"scale codes w {[hex(v) for v in w.scales.tolist()]}, x {[hex(v) for v in x.scales.tolist()]}")
    return trace_vector(dut, w, x, title=title)
