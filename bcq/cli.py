"""``bcq``: the command-line front end. Thin: argument parsing and error reporting over library
calls that the tests also use. Every user error ends in one line on stderr and exit status 2."""

import argparse
import json
import math
from pathlib import Path
import sys

import torch

from bcq.hw.units import UNITS, write_verilog
from bcq.sim.fpga import build_bitstream, format_report
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.calibdata import synthetic_calibration_data
from bcq.sw.formats.codebooks import CODEBOOK_SOURCES, DEFAULT_SOURCE, default_codebooks, load_codebooks
from bcq.sw.formats.config import PRESETS, BCQConfig
from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.formats.lobcq import calibrate
from bcq.sw.formats.quantizers import FORMATS, get_format, sqnr_db
from bcq.sw.host.image import read_image, write_image
from bcq.sw.host.minilm import minilm_calibration_data
from bcq.sw.host.models import load_state_dict, select_layers

from .demo import run_demo

EXIT_USAGE = 2


def _load_tensor(path):
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(path, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise FileFormatError(path, f"not a tensor saved with torch.save ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    if not isinstance(obj, torch.Tensor):
        raise FileFormatError(path, f"holds a {type(obj).__name__}, not a tensor "
                              "(for a state_dict use 'bcq weights')")
    return obj


def _config(text, preset=None):
    """``--preset`` (default: the default config), then ``--config`` assignments over it."""
    base = BCQConfig.preset(preset) if preset else BCQConfig()
    return BCQConfig.parse(text, base) if text else base


def _codebooks(path, config_text=None, preset=None, source=DEFAULT_SOURCE):
    if path:
        cb = load_codebooks(path)
        if (config_text or preset) and _config(config_text, preset) != cb.config:
            raise BCQError(f"--config/--preset does not match the config stored in {path}")
        return cb
    return default_codebooks(_config(config_text, preset), source)


def cmd_quantize(args):
    x = _load_tensor(args.input)
    fmt = get_format(args.format, _codebooks(args.codebooks, args.config, args.preset, args.source)
                     if args.format == "lobcq" else None)
    if args.format != "lobcq" and (args.config or args.preset):
        raise BCQError("--config and --preset apply to the lobcq format only")
    xq = fmt.fake_quant(x)
    sqnr = sqnr_db(x, xq)
    if args.output:
        _save_tensor(xq, args.output)
    report = {"format": fmt.name, "sqnr_db": sqnr if math.isfinite(sqnr) else None,
              "bits_per_scalar": fmt.bits_per_scalar, "numel": x.numel(),
              "shape": list(x.shape), "output": str(args.output) if args.output else None}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{fmt.name}: {x.numel()} scalars {tuple(x.shape)}, SQNR {sqnr:.2f} dB, "
              f"{fmt.bits_per_scalar:g} bits/scalar" + (f" -> {args.output}" if args.output else ""))


def _save_tensor(t, path):
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(t, path)
    except OSError as e:
        raise FileFormatError(path, f"cannot write: {e.strerror}") from None


def calibrate_command(args):
    """The canonical command line of a calibration (recorded in the codebook file, so a shipped set
    names how to rebuild it; file names and -o are left out)."""
    words = ["bcq", "calibrate", *map(str, args.inputs)]
    words += ["--preset", args.preset] if args.preset else []
    words += ["--config", args.config] if args.config else []
    words += ["--synthetic"] * bool(args.synthetic) + ["--minilm"] * bool(args.minilm)
    for flag, value, default in (("--iters", args.iters, 30), ("--seed", args.seed, 0),
                                 ("--max-blocks", args.max_blocks, 1 << 16)):
        words += [flag, str(value)] if value != default else []
    return " ".join(words)


def cmd_calibrate(args):
    config = _config(args.config, args.preset)
    device = _device(args.device)
    data = [_load_tensor(p) for p in args.inputs]
    synthetic = args.synthetic or not (data or args.minilm)
    if synthetic:
        data += synthetic_calibration_data(args.seed)
    if args.minilm:
        data += minilm_calibration_data(config.array_len)[0]
    res = calibrate(data, config, iters=args.iters, seed=args.seed, max_blocks=args.max_blocks,
                    device=device, progress=not args.quiet,
                    log=None if args.quiet else (lambda m: print(m, file=sys.stderr)))
    res.codebooks.provenance["data"] = [str(p) for p in args.inputs] + ["synthetic"] * synthetic + (
        ["minilm: linear weights + inputs on sw/host/data/calibration_sentences.txt"] if args.minilm else [])
    res.codebooks.provenance["command"] = calibrate_command(args)
    try:
        res.codebooks.save(args.output)
    except OSError as e:
        raise FileFormatError(args.output, f"cannot write: {e.strerror}") from None
    print(f"wrote {args.output}: {config.describe()}; MSE {res.mse_history[0]:.5f} -> "
          f"{res.mse_history[-1]:.5f} over {args.iters} iterations, {res.mse_final:.5f} on the "
          f"INT{config.entry_bits} grid")


def _device(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise BCQError("--device cuda: no CUDA device is available (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise BCQError(f"--device {name!r}: allowed cpu, cuda")
    return name


def cmd_verilog(args):
    if args.unit not in UNITS:
        raise BCQError(f"unknown unit {args.unit!r}; allowed: {', '.join(UNITS)}")
    info = write_verilog(args.unit, args.output, config=_config(args.config, args.preset), options=args.option,
                         image=args.image, layer=args.layer)
    print(info)


def cmd_weights(args):
    cb = _codebooks(args.codebooks, args.config, args.preset, args.source)
    layout = EngineLayout(cb.config, args.lanes, args.blocks_per_cycle)
    layers = select_layers(load_state_dict(args.model), args.layers, cb.config.array_len)
    manifest = write_image(args.output, layers, cb, layout)
    for entry in manifest["layers"]:
        print(f"  {entry['name']}: {entry['shape'][0]} x {entry['shape'][1]} -> {entry['weights']['bin']} "
              f"({entry['weights']['depth']} x {entry['weights']['width']} bits), {entry['scales']['bin']}")
    print(f"wrote image {args.output}/ ({len(manifest['layers'])} layers, {cb.config.describe()}, "
          f"lanes={layout.lanes}); check it with: bcq image verify {args.output}")


def cmd_image(args):
    img = read_image(args.dir)
    if args.action == "verify":
        n = sum(len(l.weight_words) + len(l.scale_words) for l in img.layers.values())
        print(f"{args.dir}: OK ({len(img.layers)} layers, {n} words, every SHA-256 and shape checked)")
        return
    m = img.manifest
    lay = m["layout"]
    print(f"image {args.dir} (format version {m['version']})")
    print(f"  format: {img.config.describe()}")
    print(f"  engine: {lay['lanes']} lanes, {lay['blocks_per_cycle']} block(s)/cycle; weight word "
          f"{lay['weight_word']['width']} bits ({lay['weight_word']['address']}), scale word "
          f"{lay['scale_word']['width']} bits ({lay['scale_word']['address']})")
    print(f"  codebook: {m['codebook']['depth']} x {m['codebook']['width']} bits in {m['codebook']['hex']}")
    for e in m["layers"]:
        print(f"  layer {e['name']}: {e['shape'][0]} x {e['shape'][1]}, tensor scale {e['tensor_scale']:.6g}, "
              f"weights {e['weights']['depth']} words, scales {e['scales']['depth']} words")


def cmd_demo(args):
    run_demo(args.output, lanes=args.lanes, vectors=args.vectors, waves=args.waves)


def cmd_build(args):
    report = build_bitstream(args.board, args.output, image=args.image, layer=args.layer)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if not report["met"] and args.strict:
        raise BCQError(f"{args.board}: Fmax {report['fmax_mhz']:.1f} MHz misses {report['target_mhz']:.0f} MHz")


def _preset_args(p, codebook_source=False):
    p.add_argument("--preset", choices=list(PRESETS),
                   help="named BCQ config (default: " + next(iter(PRESETS)) + "); --config changes fields of it")
    if codebook_source:
        p.add_argument("--source", default=DEFAULT_SOURCE, choices=CODEBOOK_SOURCES,
                       help="which shipped codebooks (without --codebooks): calibrated on the synthetic "
                            "mix or on MiniLM-L6 data")


def build_parser():
    p = argparse.ArgumentParser(prog="bcq", description="W4A4 LO-BCQ quantizer, golden model and RTL generator")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="quantize a tensor file and report SQNR")
    q.add_argument("input", help="tensor saved with torch.save (.pt)")
    q.add_argument("-o", "--output", help="write the quantize-dequantized tensor here (.pt)")
    q.add_argument("--format", default="lobcq", choices=FORMATS)
    q.add_argument("--codebooks", help="codebook JSON from 'bcq calibrate' (default: the shipped set)")
    q.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4 (lobcq only)")
    _preset_args(q, codebook_source=True)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_quantize)

    c = sub.add_parser("calibrate", help="calibrate LO-BCQ codebooks and write them as JSON")
    c.add_argument("inputs", nargs="*", help="tensors (.pt) to calibrate on (default: the synthetic mix)")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--synthetic", action="store_true", help="add the shipped synthetic calibration mix")
    c.add_argument("--minilm", action="store_true",
                   help="add MiniLM-L6's linear weights and recorded inputs on the calibration sentences")
    c.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4")
    _preset_args(c)
    c.add_argument("--iters", type=int, default=30)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-blocks", type=int, default=1 << 16)
    c.add_argument("--device", default="cpu", help="cpu (reference) or cuda")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_calibrate)

    v = sub.add_parser("verilog", help="write a unit's Verilog")
    v.add_argument("--unit", required=True)
    v.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4")
    _preset_args(v)
    v.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="hardware parameter, e.g. blocks_per_cycle=2, max_len=8192")
    v.add_argument("--image", help="gemv: image directory whose layer initializes the memories")
    v.add_argument("--layer", help="gemv: which layer of the image (default: the first)")
    v.add_argument("-o", "--output", required=True, help="a .v file (gemv: a directory)")
    v.set_defaults(func=cmd_verilog)

    w = sub.add_parser("weights", help="LO-BCQ-encode a model's weights into an engine image")
    w.add_argument("model", help="state_dict (.pt) or .safetensors file")
    w.add_argument("-o", "--output", required=True, help="image directory")
    w.add_argument("--layers", nargs="+", help="tensor names (default: every 2-D weight that fits)")
    w.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4")
    _preset_args(w, codebook_source=True)
    w.add_argument("--codebooks", help="codebook JSON (default: the shipped set)")
    w.add_argument("--lanes", type=int, default=4, help="engine lanes R (rows in parallel)")
    w.add_argument("--blocks-per-cycle", type=int, default=1)
    w.set_defaults(func=cmd_weights)

    im = sub.add_parser("image", help="check or show an image directory")
    im.add_argument("action", choices=["verify", "show"])
    im.add_argument("dir")
    im.set_defaults(func=cmd_image)

    b = sub.add_parser("build", help="build a bitstream for a board (YoWASP toolchain from PyPI)")
    b.add_argument("--board", required=True, help="ulx3s-85f or icebreaker")
    b.add_argument("-o", "--output", default="build", help="build directory (a folder per board)")
    b.add_argument("--image", help="bake this weight image (built with --lanes of the board's engine) into the RAMs")
    b.add_argument("--layer", help="which layer of --image (default: the first)")
    b.add_argument("--json", help="also write the report as JSON here")
    b.add_argument("--strict", action="store_true", help="exit non-zero when timing is not met")
    b.set_defaults(func=cmd_build)

    d = sub.add_parser("demo", help="the whole flow on a shipped layer: image, Verilog, Verilator, check")
    d.add_argument("-o", "--output", default="out/demo")
    d.add_argument("--lanes", type=int, default=4)
    d.add_argument("--vectors", type=int, default=4)
    d.add_argument("--waves", action="store_true", help="record an FST waveform")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BCQError as e:
        print(f"bcq: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bcq: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
