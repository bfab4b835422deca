"""Registry of the generated units: ``bcq verilog --unit NAME`` builds them from here."""

from pathlib import Path

from sw.config import BCQConfig
from sw.errors import BCQError, ConfigError

__all__ = ["UNITS", "build_unit", "write_verilog", "parse_options"]


def _bcq_dot(config, codebooks=None, blocks_per_cycle=1, max_len=None, codebook_rom=False):
    from sw.golden import DEFAULT_MAX_LEN
    from .bcq_dot import BCQDot
    return BCQDot(config, blocks_per_cycle=blocks_per_cycle, max_len=max_len or DEFAULT_MAX_LEN,
                  codebooks=codebooks, codebook_rom=codebook_rom)


def _bxp_mac(config, n_bits=8, block_bits=2, max_len=4096):
    from sw.axbxp import BxPConfig
    from .bxp_mac import BxPMac
    return BxPMac(BxPConfig(n_bits=n_bits, block_bits=block_bits), max_len=max_len)


def _int_mac(config, n_bits=8, lanes=1, max_len=4096):
    from .int_mac import IntMac
    return IntMac(n_bits, lanes, max_len=max_len)


def _mxfp4_dot(config, lanes=8, max_len=4096):
    from .mx_dot import MXFP4Dot
    return MXFP4Dot(lanes=lanes, max_len=max_len)


def _gemv(config, lanes=4, blocks_per_cycle=1, max_rows=None, max_cols=None, rom=False, image=None, layer=None):
    from sw.codebooks import default_codebooks
    from sw.image import read_image
    from sw.image_layout import EngineLayout
    from .gemv import GEMV
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


# name -> (factory, Verilog module name, {option: type}); `config` is the BCQ format config.
UNITS = {
    "bcq-dot": (_bcq_dot, "bcq_dot", {"blocks_per_cycle": int, "max_len": int, "codebook_rom": bool}),
    "bxp-mac": (_bxp_mac, "bxp_mac", {"n_bits": int, "block_bits": int, "max_len": int}),
    "int-mac": (_int_mac, "int_mac", {"n_bits": int, "lanes": int, "max_len": int}),
    "mxfp4-dot": (_mxfp4_dot, "mxfp4_dot", {"lanes": int, "max_len": int}),
    "gemv": (_gemv, "gemv", {"lanes": int, "blocks_per_cycle": int, "max_rows": int, "max_cols": int, "rom": bool}),
}


def parse_options(unit, options):
    """``["blocks_per_cycle=2", ...]`` -> typed kwargs, checked against the unit's parameters."""
    allowed = UNITS[unit][2]
    kwargs = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"--option {key}", value or None, f"one of {sorted(allowed)} as KEY=VALUE")
        kind = allowed[key]
        if kind is bool:
            if value.lower() not in ("1", "0", "true", "false"):
                raise ConfigError(key, value, "true or false")
            kwargs[key] = value.lower() in ("1", "true")
        else:
            try:
                kwargs[key] = kind(value)
            except ValueError:
                raise ConfigError(key, value, f"an {kind.__name__}") from None
    return kwargs


def build_unit(unit, config, options=(), codebooks=None, image=None, layer=None):
    if unit not in UNITS:
        raise BCQError(f"unknown unit {unit!r}; allowed: {', '.join(UNITS)}")
    factory, name, _ = UNITS[unit]
    kwargs = parse_options(unit, options)
    if unit != "bcq-dot" and config != BCQConfig():
        raise BCQError(f"--config is the BCQ format; unit {unit} takes --option instead")
    if unit == "gemv":
        return factory(config, image=image, layer=layer, **kwargs), name
    if image is not None or layer is not None:
        raise BCQError(f"--image/--layer apply to the gemv unit only, not {unit}")
    if kwargs.get("codebook_rom") and codebooks is None:
        from sw.codebooks import default_codebooks
        codebooks = default_codebooks(config)
    if codebooks is not None:
        kwargs["codebooks"] = codebooks
    return factory(config, **kwargs), name


def write_verilog(unit, output, *, config, options=(), codebooks=None, image=None, layer=None):
    """Write the unit's Verilog (module named after the unit) and return a one-line summary.
    For ``gemv`` the output is a directory: ``gemv.v`` plus the image's memory files."""
    import shutil
    from sim.runner import verilog_text
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
    output = target
    import re
    header = re.search(rf"^module {name}\((.*?)\);", text, re.M | re.S)
    ports = ", ".join(sorted(p.strip() for p in header.group(1).split(","))) if header else "?"
    if unit == "bcq-dot":
        what = f"{config.describe()}; latency {dut.latency} cycles, {dut.macs_per_cycle} MACs/cycle"
    elif unit == "bxp-mac":
        modes = ", ".join(f"{m.name}:{dut.products_per_cycle(m)}" for m in dut.config.modes)
        what = f"N={dut.config.n_bits} k={dut.config.block_bits}; latency {dut.latency} cycles; products/cycle {modes}"
    elif unit == "gemv":
        lay = dut.layout
        what = (f"{lay.config.describe()}; {lay.lanes} lanes, {dut.macs_per_cycle} MACs/cycle, "
                f"up to {dut.max_rows} x {dut.max_cols}" + (f", memories from {image}" if image else ""))
    elif unit == "mxfp4-dot":
        c = dut.config
        what = (f"MXFP4, E8M0 exponents {c.exp_min}..{c.exp_max} per {c.block}; {dut.lanes} MACs/cycle, "
                f"latency {dut.latency} cycles")
    else:
        what = f"{dut.n_bits}-bit x {dut.lanes} lanes; latency {dut.latency} cycles"
    return f"wrote {output}: module {name} ({what}; acc {dut.acc_bits} bits); ports: {ports}"
