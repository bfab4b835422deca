"""Registry of the generated units: ``bcq verilog --unit NAME`` builds them from here."""

from pathlib import Path

from sw.errors import BCQError, ConfigError

__all__ = ["UNITS", "build_unit", "write_verilog", "parse_options"]


def _bcq_dot(config, codebooks=None, blocks_per_cycle=1, max_len=None, codebook_rom=False):
    from sw.golden import DEFAULT_MAX_LEN
    from .bcq_dot import BCQDot
    return BCQDot(config, blocks_per_cycle=blocks_per_cycle, max_len=max_len or DEFAULT_MAX_LEN,
                  codebooks=codebooks, codebook_rom=codebook_rom)


UNITS = {"bcq-dot": (_bcq_dot, "bcq_dot", {"blocks_per_cycle": int, "max_len": int, "codebook_rom": bool})}


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


def build_unit(unit, config, options=(), codebooks=None):
    if unit not in UNITS:
        raise BCQError(f"unknown unit {unit!r}; allowed: {', '.join(UNITS)}")
    factory, name, _ = UNITS[unit]
    kwargs = parse_options(unit, options)
    if kwargs.get("codebook_rom") and codebooks is None:
        from sw.codebooks import default_codebooks
        codebooks = default_codebooks(config)
    if codebooks is not None:
        kwargs["codebooks"] = codebooks
    return factory(config, **kwargs), name


def write_verilog(unit, output, *, config, options=(), codebooks=None):
    """Write the unit's Verilog (module named after the unit) and return a one-line summary."""
    from sim.runner import verilog_text
    dut, name = build_unit(unit, config, options, codebooks)
    text = verilog_text(dut, name)
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    except OSError as e:
        raise BCQError(f"{output}: cannot write: {e.strerror}") from None
    ports = ", ".join(sorted({line.split()[-1].rstrip(";") for line in text.splitlines()
                              if line.strip().startswith(("input", "output"))}))
    extra = ""
    if hasattr(dut, "latency"):
        extra = f"; latency {dut.latency} cycles, {dut.macs_per_cycle} MACs/cycle, acc {dut.acc_bits} bits"
    return f"wrote {output}: module {name} ({config.describe()}{extra}); ports: {ports}"
