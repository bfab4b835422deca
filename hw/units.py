"""Registry of the generated units: ``bcq verilog --unit NAME`` builds them from here."""

from dataclasses import dataclass
from pathlib import Path
import re
from typing import Callable

from bcq.sw.contract.image_layout import BxPLayout, EngineLayout
from bcq.sw.formats.axbxp import BxPConfig
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import DEFAULT
from bcq.sw.formats.errors import BCQError, ConfigError
from bcq.sw.formats.files import atomic_write, check_writable_file
from bcq.sw.formats.golden import DEFAULT_MAX_LEN
from bcq.sw.formats.options import parse_assignments
from bcq.sw.host.image import read_image, read_int8_image
from bcq.sw.host.progress import step

from .bcq_dot import BCQDot
from .bcq_encoder import BCQEncoder
from .bxp_engine import BxPEngine
from .bxp_mac import BxPMac
from .export import verilog_text
from .gemv import GEMV
from .int_mac import IntMac
from .mx_dot import MXFP4Dot

__all__ = ["UNITS", "IMAGE_UNITS", "Unit", "build_unit", "write_verilog"]


def _bcq_dot(config=None, codebooks=None, blocks_per_cycle=1, max_len=DEFAULT_MAX_LEN, codebook_rom=False,
             scale_multiplier="chain", cells="ccu2c"):
    if codebook_rom and codebooks is None:
        codebooks = default_codebooks(config)
    return BCQDot(config or DEFAULT, blocks_per_cycle=blocks_per_cycle, max_len=max_len, codebooks=codebooks,
                  codebook_rom=codebook_rom, scale_multiplier=scale_multiplier, cells=cells)


def _gemv(config, lanes=None, blocks_per_cycle=None, max_rows=None, max_cols=None, rom=False, image=None,
          layer=None, progress=False):
    if image is None:
        layout = EngineLayout(config or DEFAULT, lanes or 4, blocks_per_cycle or 1)
        return GEMV(layout, max_rows=max_rows or 64, max_cols=max_cols or 1024,
                    codebooks=default_codebooks(config) if rom else None, rom=rom)
    img = read_image(image, progress=progress)
    # The image fixes the format and the word layout: a different value given too cannot apply.
    for key, value in (("lanes", lanes), ("blocks_per_cycle", blocks_per_cycle)):
        if value is not None and value != getattr(img.layout, key):
            raise BCQError(f"--option {key}={value} does not match the image {image}, written for {key}="
                           f"{getattr(img.layout, key)}; leave it out (the image decides)")
    if config is not None and config != img.config:
        raise BCQError(f"--config ({config.describe()}) does not match the image {image} ({img.config.describe()}); "
                       "leave it out (the image decides)")
    li = img.layer(layer)
    return GEMV(img.layout, max_rows=max_rows or li.shape[0], max_cols=max_cols or li.shape[1],
                codebooks=img.codebooks, image=li, rom=rom)


def _bxp_engine(config, rows=None, n_bits=None, block_bits=None, max_rows=None, max_cols=None, rom=False, image=None,
                layer=None, progress=False):
    if image is None:
        layout = BxPLayout(BxPConfig(n_bits=n_bits or 8, block_bits=block_bits or 2), rows or 4)
        if rom:
            raise BCQError("--option rom=true needs --image (the memory contents to bake in)")
        return BxPEngine(layout, max_rows=max_rows or 64, max_cols=max_cols or 1024)
    img = read_int8_image(image, progress=progress)
    for key, value, have in (("rows", rows, img.layout.rows), ("n_bits", n_bits, img.layout.config.n_bits),
                             ("block_bits", block_bits, img.layout.config.block_bits)):
        if value is not None and value != have:
            raise BCQError(f"--option {key}={value} does not match the image {image}, written for {key}={have}; "
                           "leave it out (the image decides)")
    li = img.layer(layer)
    return BxPEngine(img.layout, max_rows=max_rows or li.shape[0], max_cols=max_cols or li.shape[1], image=li, rom=rom)


def _describe_bxp_engine(dut):
    modes = ", ".join(f"{m.name}:{dut.products_per_cycle(m)}" for m in dut.layout.config.modes)
    return (f"N={dut.layout.config.n_bits} k={dut.layout.config.block_bits}; {dut.layout.rows} rows of the Ax-BxP MAC, "
            f"up to {dut.max_rows} x {dut.max_cols}; products/cycle {modes}"
            + (f"; memory from the image (layer mode {dut.image.mode.name})" if dut.image is not None else ""))


def _describe_bcq_dot(dut):
    return (f"{dut.config.describe()}; latency {dut.latency} cycles, {dut.macs_per_cycle} MACs/cycle; "
            f"scale multiply on {'a DSP' if dut.scale_multiplier == 'dsp' else 'carry chains'}, {dut.cells} cells")


def _bcq_encoder(config, codebooks=None, blocks_per_cycle=1, lanes=None):
    return BCQEncoder(config, blocks_per_cycle=blocks_per_cycle, lanes=lanes, codebooks=codebooks)


def _describe_bcq_encoder(dut):
    return (f"{dut.config.describe()}; BF16 in, {dut.lanes} scalars/cycle, latency {dut.latency} cycles "
            f"from an array's last beat, FIFO {dut.fifo_depth} beats, table rebuild {dut.fill_cycles} cycles")


def _describe_bxp_mac(dut):
    modes = ", ".join(f"{m.name}:{dut.products_per_cycle(m)}" for m in dut.config.modes)
    return f"N={dut.config.n_bits} k={dut.config.block_bits}; latency {dut.latency} cycles; products/cycle {modes}"


def _describe_gemv(dut):
    lay = dut.layout
    return (f"{lay.config.describe()}; {lay.lanes} lanes, {dut.macs_per_cycle} MACs/cycle, "
            f"up to {dut.max_rows} x {dut.max_cols}" + (", memories from the image" if dut.image is not None else ""))


def _describe_mxfp4_dot(dut):
    c = dut.config
    return (f"MXFP4, E8M0 exponents {c.exp_min}..{c.exp_max} per {c.block}; {dut.lanes} MACs/cycle, "
            f"latency {dut.latency} cycles")


@dataclass(frozen=True)
class Unit:
    """One generated unit: ``factory(config, **options)`` builds it, ``module`` names its Verilog
    module, ``options`` gives each ``--option`` and its type, ``describe(dut)`` one line about it."""

    factory: Callable
    module: str
    options: dict
    describe: Callable
    takes_config: bool = False   # whether the BCQ format (--config) applies


UNITS = {
    "bcq-dot": Unit(_bcq_dot, "bcq_dot", {"blocks_per_cycle": int, "max_len": int, "codebook_rom": bool,
                                          "scale_multiplier": str, "cells": str},
                    _describe_bcq_dot, takes_config=True),
    "bcq-encoder": Unit(_bcq_encoder, "bcq_encoder", {"blocks_per_cycle": int, "lanes": int}, _describe_bcq_encoder,
                        takes_config=True),
    "bxp-mac": Unit(lambda config, n_bits=8, block_bits=2, max_len=4096:
                    BxPMac(BxPConfig(n_bits=n_bits, block_bits=block_bits), max_len=max_len),
                    "bxp_mac", {"n_bits": int, "block_bits": int, "max_len": int}, _describe_bxp_mac),
    "int-mac": Unit(lambda config, n_bits=8, lanes=1, max_len=4096: IntMac(n_bits, lanes, max_len=max_len),
                    "int_mac", {"n_bits": int, "lanes": int, "max_len": int},
                    lambda dut: f"{dut.n_bits}-bit x {dut.lanes} lanes; latency {dut.latency} cycles"),
    "mxfp4-dot": Unit(lambda config, lanes=8, max_len=4096: MXFP4Dot(lanes=lanes, max_len=max_len),
                      "mxfp4_dot", {"lanes": int, "max_len": int}, _describe_mxfp4_dot),
    "gemv": Unit(_gemv, "gemv", {"lanes": int, "blocks_per_cycle": int, "max_rows": int, "max_cols": int, "rom": bool},
                 _describe_gemv, takes_config=True),
    "bxp-engine": Unit(_bxp_engine, "bxp_engine", {"rows": int, "n_bits": int, "block_bits": int, "max_rows": int,
                                                    "max_cols": int, "rom": bool}, _describe_bxp_engine),
}

IMAGE_UNITS = ("gemv", "bxp-engine")    # units whose memories an image (--image) initializes


def _unit(name):
    if name not in UNITS:
        raise BCQError(f"unknown unit {name!r}; allowed: {', '.join(UNITS)}")
    return UNITS[name]


def build_unit(unit, config=None, options=(), codebooks=None, image=None, layer=None, progress=False):
    """``(elaboratable, module name)`` of ``unit`` with ``options`` (``["KEY=VALUE", ...]``).

    ``config`` is the BCQ format (None: the default, or the image's for ``gemv --image``);
    every option given must apply, every integer option is positive."""
    spec = _unit(unit)
    kwargs = parse_assignments(options, spec.options, what="--option")
    for key, value in kwargs.items():
        if spec.options[key] is int and value < 1:
            raise ConfigError(f"--option {key}", value, "a positive integer")
    if not spec.takes_config and config is not None:
        raise BCQError(f"--config is the BCQ format; unit {unit} takes --option instead")
    if unit in IMAGE_UNITS:
        return spec.factory(config, image=image, layer=layer, progress=progress, **kwargs), spec.module
    if image is not None or layer is not None:
        raise BCQError(f"--image/--layer apply to the units {', '.join(IMAGE_UNITS)} only, not {unit}")
    if codebooks is not None:
        kwargs["codebooks"] = codebooks
    return spec.factory(config, **kwargs), spec.module


def verilog_path(output, module):
    """Where ``-o output`` puts a unit's Verilog: ``output`` itself when it ends in ``.v`` or
    ``.sv`` (and is not a directory), else ``output/<module>.v``."""
    output = Path(output)
    if output.suffix in (".v", ".sv") and not output.is_dir():
        return output
    return output / f"{module}.v"


def write_verilog(unit, output, *, config=None, options=(), codebooks=None, image=None, layer=None, progress=False):
    """Write the unit's Verilog (module named after the unit) and return a one-line summary.

    ``output`` is a ``.v`` file or a directory (see :func:`verilog_path`); the file is written
    atomically and checked for writability before the (possibly minutes-long) generation. A
    ``gemv`` built from an image has the image's words in its memories' initial values inside the
    Verilog, so no memory file is needed beside it. ``progress`` shows each long step on stderr.
    """
    spec = _unit(unit)
    target = verilog_path(output, spec.module)
    check_writable_file(target, parents=True)
    with step(f"{unit}: elaborate", enabled=progress):
        dut, name = build_unit(unit, config, options, codebooks, image, layer, progress=progress)
    with step(f"{unit}: Verilog (Amaranth + Yosys)", enabled=progress):
        text = verilog_text(dut, name)
    atomic_write(target, text.encode(), make_parents=True)
    header = re.search(rf"^module {name}\((.*?)\);", text, re.M | re.S)
    ports = ", ".join(sorted(p.strip() for p in header.group(1).split(","))) if header else "?"
    acc = f"; acc {dut.acc_bits} bits" if hasattr(dut, "acc_bits") else ""
    source = f", image {image} layer {dut.image.name}" if unit in IMAGE_UNITS and image is not None else ""
    return (f"wrote {target}: module {name} ({UNITS[unit].describe(dut)}{acc}{source}); "
            f"ports: {ports}")
