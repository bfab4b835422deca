"""Registry of the generated units: ``bcq verilog --unit NAME`` builds them from here."""

from dataclasses import dataclass
from pathlib import Path
import re
import shutil
from typing import Callable

from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.axbxp import BxPConfig
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden import DEFAULT_MAX_LEN
from bcq.sw.formats.options import parse_assignments
from bcq.sw.host.image import read_image

from .bcq_dot import BCQDot
from .bxp_mac import BxPMac
from .export import verilog_text
from .gemv import GEMV
from .int_mac import IntMac
from .mx_dot import MXFP4Dot

__all__ = ["UNITS", "Unit", "build_unit", "write_verilog"]


def _bcq_dot(config, codebooks=None, blocks_per_cycle=1, max_len=DEFAULT_MAX_LEN, codebook_rom=False):
    if codebook_rom and codebooks is None:
        codebooks = default_codebooks(config)
    return BCQDot(config, blocks_per_cycle=blocks_per_cycle, max_len=max_len, codebooks=codebooks,
                  codebook_rom=codebook_rom)


def _gemv(config, lanes=4, blocks_per_cycle=1, max_rows=None, max_cols=None, rom=False, image=None, layer=None):
    if image is None:
        layout = EngineLayout(config, lanes, blocks_per_cycle)
        return GEMV(layout, max_rows=max_rows or 64, max_cols=max_cols or 1024,
                    codebooks=default_codebooks(config) if rom else None, rom=rom)
    img = read_image(image)
    name = layer or next(iter(img.layers))
    if name not in img.layers:
        raise BCQError(f"image {image} has no layer {name!r}; layers: {', '.join(img.layers)}")
    li = img.layers[name]
    return GEMV(img.layout, max_rows=max_rows or li.shape[0], max_cols=max_cols or li.shape[1],
                codebooks=img.codebooks, image=li, rom=rom)


def _describe_bcq_dot(dut):
    return f"{dut.config.describe()}; latency {dut.latency} cycles, {dut.macs_per_cycle} MACs/cycle"


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
    "bcq-dot": Unit(_bcq_dot, "bcq_dot", {"blocks_per_cycle": int, "max_len": int, "codebook_rom": bool},
                    _describe_bcq_dot, takes_config=True),
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
}


def _unit(name):
    if name not in UNITS:
        raise BCQError(f"unknown unit {name!r}; allowed: {', '.join(UNITS)}")
    return UNITS[name]


def build_unit(unit, config, options=(), codebooks=None, image=None, layer=None):
    """``(elaboratable, module name)`` of ``unit`` with ``options`` (``["KEY=VALUE", ...]``)."""
    spec = _unit(unit)
    kwargs = parse_assignments(options, spec.options, what="--option")
    if not spec.takes_config and config != BCQConfig():
        raise BCQError(f"--config is the BCQ format; unit {unit} takes --option instead")
    if unit == "gemv":
        return spec.factory(config, image=image, layer=layer, **kwargs), spec.module
    if image is not None or layer is not None:
        raise BCQError(f"--image/--layer apply to the gemv unit only, not {unit}")
    if codebooks is not None:
        kwargs["codebooks"] = codebooks
    return spec.factory(config, **kwargs), spec.module


def write_verilog(unit, output, *, config, options=(), codebooks=None, image=None, layer=None):
    """Write the unit's Verilog (module named after the unit) and return a one-line summary.
    For ``gemv`` the output is a directory: ``gemv.v`` plus the image's memory files."""
    dut, name = build_unit(unit, config, options, codebooks, image, layer)
    text = verilog_text(dut, name)
    output = Path(output)
    target = output / f"{name}.v" if unit == "gemv" else output
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if unit == "gemv" and image is not None:
            for f in Path(image).iterdir():
                if f.suffix in (".hex", ".bin") or f.name == "manifest.json":
                    shutil.copy2(f, output / f.name)
    except OSError as e:
        raise BCQError(f"{output}: cannot write: {e.strerror}") from None
    header = re.search(rf"^module {name}\((.*?)\);", text, re.M | re.S)
    ports = ", ".join(sorted(p.strip() for p in header.group(1).split(","))) if header else "?"
    return (f"wrote {target}: module {name} ({UNITS[unit].describe(dut)}; acc {dut.acc_bits} bits); "
            f"ports: {ports}")
