"""Verilog export: the one place gateware becomes Verilog text (``bcq verilog``, the simulation
runners and the synthesis runners all call :func:`verilog_text`)."""

from amaranth.back import verilog

__all__ = ["verilog_text"]


def verilog_text(elaboratable, name, *, src=False, platform=None):
    """Verilog of ``elaboratable`` with top module ``name``; without source locations unless
    ``src`` (so the text, and the build caches keyed on it, do not change when unrelated Python
    lines move; coverage reports use them to point at the Python line behind a signal).
    ``platform``: what the design's ``elaborate`` sees (e.g. one whose ``family`` is ``"ecp5"``,
    for the ECP5 primitive forms)."""
    return verilog.convert(elaboratable, name=name, emit_src=src, platform=platform)
