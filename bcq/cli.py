"""``bcq``: the command-line front end. Thin: argument parsing and error reporting over library
calls that the tests also use.

Every user mistake ends in exit status 2 and one line on stderr, ``bcq: error: ...``, naming the
file, option or value and what is allowed: the project's errors (:class:`BCQError`), argparse's
usage errors and the operating system's (a read-only directory, a full disk). Options that
cannot apply to the command as given are refused, not ignored. ``--debug`` also prints the
traceback; anything else that goes wrong is a bug and says so (exit status 1).
"""

import argparse
import concurrent.futures
import functools
import io
import json
import math
import sys
import time
import traceback

import torch

from bcq.hw.board import BOARDS
from bcq.hw.units import IMAGE_UNITS, UNITS, write_verilog
from bcq.sim.fpga import build_bitstream, check_timing, format_report
from bcq.sim.trace import format_trace, trace_unit
from bcq.sw.contract.image_layout import BxPLayout, EngineLayout
from bcq.sw.formats.axbxp import DEFAULT_BXP
from bcq.sw.formats.calibdata import synthetic_calibration_data
from bcq.sw.formats.codebooks import CODEBOOK_SOURCES, DEFAULT_SOURCE, default_codebooks, load_codebooks
from bcq.sw.formats.config import PRESETS, BCQConfig
from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.formats.files import atomic_write, check_regular, check_writable_file
from bcq.sw.formats.lobcq import calibrate
from bcq.sw.formats.quantizers import FORMATS, get_format, sqnr_db
from bcq.sw.host.image import FLOAT_DTYPES, image_format, read_image, read_int8_image, write_image, write_int8_image
from bcq.sw.host.minilm import minilm_calibration_data
from bcq.sw.host.models import load_state_dict, select_layers

from .demo import run_demo

EXIT_USAGE = 2
EXIT_BUG = 1
MAX_SEED = (1 << 64) - 1  # torch.Generator.manual_seed takes 64 bits


def _stderr(message):
    print(f"bcq: {message}", file=sys.stderr)


# -- inputs ------------------------------------------------------------------------------------

def _load_tensor(path):
    path = check_regular(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise FileFormatError(path, f"not a tensor saved with torch.save ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    if not isinstance(obj, torch.Tensor):
        raise FileFormatError(path, f"holds a {type(obj).__name__}, not a tensor "
                              "(for a state_dict use 'bcq weights')")
    if obj.dtype not in FLOAT_DTYPES:
        raise FileFormatError(path, f"holds a tensor of dtype {obj.dtype}; allowed: "
                              f"{', '.join(str(d) for d in FLOAT_DTYPES)}")
    if obj.numel() == 0:
        raise FileFormatError(path, f"holds an empty tensor of shape {tuple(obj.shape)}: nothing to quantize")
    return obj


def _config(text, preset=None):
    """``--preset`` (a named config), then ``--config`` assignments over it (over the default config
    without ``--preset``); None when neither is given (the default, or what an image or codebook
    file says)."""
    if not (text or preset):
        return None
    base = BCQConfig.preset(preset) if preset else BCQConfig()
    return BCQConfig.parse(text, base) if text else base


def _config_options(args):
    """The config options the user gave, for messages (e.g. '--preset/--config')."""
    return "/".join(o for o, v in (("--preset", getattr(args, "preset", None)), ("--config", args.config)) if v)


def _codebooks(path, config, source=DEFAULT_SOURCE, options="--config"):
    if path:
        cb = load_codebooks(path)
        if config is not None and config != cb.config:
            raise BCQError(f"{options} ({config.describe()}) does not match the codebooks in {path} "
                           f"({cb.config.describe()}); leave {options} out")
        return cb
    return default_codebooks(config, source)


def _check_output_file(path):
    """Refuse an output that cannot be a file before any work is done."""
    check_writable_file(path, parents=True)


def _device(name):
    if name not in ("cpu", "cuda"):
        raise BCQError(f"--device {name!r}: allowed cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise BCQError("--device cuda: no CUDA device is available (use --device cpu)")
    return name


# -- commands ----------------------------------------------------------------------------------

def cmd_quantize(args):
    if args.format != "lobcq":
        for option, value in (("--preset", args.preset), ("--config", args.config), ("--codebooks", args.codebooks)):
            if value:
                raise BCQError(f"{option} applies to --format lobcq only, not {args.format}")
    if args.output:
        _check_output_file(args.output)
    config = _config(args.config, args.preset)
    fmt = get_format(args.format, _codebooks(args.codebooks, config, args.source, _config_options(args))
                     if args.format == "lobcq" else None)
    x = _load_tensor(args.input)
    xq = fmt.fake_quant(x)
    if not torch.isfinite(xq).all():
        raise BCQError(f"{args.input}: {fmt.name} gives non-finite values for this tensor (|x| up to "
                       f"{float(x.abs().max()):.3g} is outside what {fmt.name} can represent)")
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
    buf = io.BytesIO()
    torch.save(t, buf)
    atomic_write(path, buf.getvalue(), make_parents=True)


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
    _check_output_file(args.output)
    config = _config(args.config, args.preset) or BCQConfig()
    device = _device(args.device)
    data = [_load_tensor(p) for p in args.inputs]
    if data and not (args.synthetic or args.minilm) and all(not bool(t.any()) for t in data):
        raise BCQError(f"{', '.join(args.inputs)}: every value is zero; codebooks calibrated on zeros are all "
                       "zero (add non-zero data, --synthetic or --minilm)")
    synthetic = args.synthetic or not (data or args.minilm)
    if synthetic:
        data += synthetic_calibration_data(args.seed)
    if args.minilm:
        data += minilm_calibration_data(config.array_len)[0]
    res = calibrate(data, config, iters=args.iters, seed=args.seed, max_blocks=args.max_blocks,
                    device=device, progress=not args.quiet,
                    log=None if args.quiet else (lambda m: print(m, file=sys.stderr)))
    if not bool(res.codebooks.entries.any()):
        raise BCQError("calibration gave all-zero codebooks (the data has no non-zero block); nothing written")
    res.codebooks.provenance["data"] = [str(p) for p in args.inputs] + ["synthetic"] * synthetic + (
        ["minilm: linear weights + inputs on sw/host/data/calibration_sentences.txt"] if args.minilm else [])
    res.codebooks.provenance["command"] = calibrate_command(args)
    res.codebooks.save(args.output)
    print(f"wrote {args.output}: {config.describe()}; MSE {res.mse_history[0]:.5f} -> "
          f"{res.mse_history[-1]:.5f} over {args.iters} iterations, {res.mse_final:.5f} on the "
          f"INT{config.entry_bits} grid")


def cmd_verilog(args):
    if args.unit not in UNITS:
        raise BCQError(f"unknown unit {args.unit!r}; allowed: {', '.join(UNITS)}")
    if args.layer is not None and args.image is None:
        raise BCQError("--layer names a layer of --image; give --image too")
    if args.image is not None and args.unit not in IMAGE_UNITS:
        raise BCQError(f"--image applies to --unit {' or '.join(IMAGE_UNITS)} only, not {args.unit}")
    info = write_verilog(args.unit, args.output, config=_config(args.config, args.preset), options=args.option,
                         image=args.image, layer=args.layer, progress=not args.quiet)
    print(info)


def cmd_weights(args):
    if args.format == "int8":
        return _weights_int8(args)
    if args.mode is not None:
        raise BCQError("--mode applies to --format int8 only (the Ax-BxP engine's MAC mode)")
    args.blocks_per_cycle = args.blocks_per_cycle or 1
    config = _config(args.config, args.preset)
    cb = _codebooks(args.codebooks, config, args.source, _config_options(args))
    layout = EngineLayout(cb.config, args.lanes, args.blocks_per_cycle)
    state = load_state_dict(args.model)
    selection = select_layers(state, args.layers, cb.config.array_len)
    for line in selection.describe_skipped(state):
        print(f"  {line}")
    energy = _channel_energy(args.channel_energy, selection.layers) if args.channel_energy else None
    manifest = write_image(args.output, selection.layers, cb, layout, force=args.force, progress=not args.quiet,
                           log=_stderr, search=args.search, channel_energy=energy,
                           pow2_tensor_scale=args.pow2_tensor_scale)
    for entry in manifest["layers"]:
        print(f"  {entry['name']}: {entry['shape'][0]} x {entry['shape'][1]} -> {entry['weights']['bin']} "
              f"({entry['weights']['depth']} x {entry['weights']['width']} bits), {entry['scales']['bin']}")
    print(f"wrote image {args.output}/ ({len(manifest['layers'])} layers, {cb.config.describe()}, "
          f"lanes={layout.lanes}); check it with: bcq image verify {args.output}")


def _channel_energy(path, layers):
    """Each layer's channel energies from ``path`` (name -> 1-D tensor; a key is the weight's name
    or that name without ``.weight``, as a forward hook on the module would name it)."""
    raw = load_state_dict(path)
    out = {}
    for name in layers:
        key = next((k for k in (name, name.removesuffix(".weight")) if k in raw), None)
        if key is None:
            raise BCQError(f"{path}: no channel energies for layer {name!r} (keys are layer names, with or "
                           f"without .weight; the file has {len(raw)}: {', '.join(list(raw)[:3])}"
                           f"{', ...' if len(raw) > 3 else ''})")
        out[name] = raw[key]
    return out


def _weights_int8(args):
    for option, value in (("--search", args.search or None), ("--channel-energy", args.channel_energy),
                          ("--pow2-tensor-scale", args.pow2_tensor_scale or None)):
        if value is not None:
            raise BCQError(f"{option} applies to --format lobcq only, not int8")
    for option, value in (("--config", args.config), ("--preset", args.preset), ("--codebooks", args.codebooks),
                          ("--source", None if args.source == DEFAULT_SOURCE else args.source),
                          ("--blocks-per-cycle", args.blocks_per_cycle)):
        if value is not None:
            raise BCQError(f"{option} applies to --format lobcq only, not int8")
    layout = BxPLayout(DEFAULT_BXP, args.lanes)
    mode = layout.mode(args.mode or "exact8")
    state = load_state_dict(args.model)
    selection = select_layers(state, args.layers, 1)
    for line in selection.describe_skipped(state):
        print(f"  {line}")
    manifest = write_int8_image(args.output, selection.layers, layout, mode.name, force=args.force,
                                progress=not args.quiet, log=_stderr)
    for entry in manifest["layers"]:
        print(f"  {entry['name']}: {entry['shape'][0]} x {entry['shape'][1]} -> {entry['weights']['bin']} "
              f"({entry['weights']['depth']} x {entry['weights']['width']} bits), {entry['scales']['bin']}")
    print(f"wrote image {args.output}/ ({len(manifest['layers'])} layers, INT{mode.precision} per channel for mode "
          f"{mode.name}, {layout.lanes(mode)} columns/beat, rows={layout.rows}); check it with: bcq image verify "
          f"{args.output}")


def _image_int8(args):
    img = read_int8_image(args.dir, progress=not args.quiet)
    if args.action == "verify":
        n = sum(len(l.weight_words) + l.shape[0] for l in img.layers.values())
        print(f"{args.dir}: OK ({len(img.layers)} layers, {n} words, every SHA-256 and shape checked)")
        return
    lay = img.manifest["layout"]
    print(f"image {args.dir} (format version {img.manifest['version']}, format int8)")
    print(f"  engine: Ax-BxP, N={lay['n_bits']} k={lay['block_bits']}, {lay['rows']} rows; weight word "
          f"{lay['weight_word']['width']} bits ({lay['weight_word']['address']})")
    for l in img.layers.values():
        print(f"  layer {l.name}: {l.shape[0]} x {l.shape[1]}, mode {l.mode.name} (INT{l.mode.precision}, "
              f"{img.layout.lanes(l.mode)} columns/beat), weights {len(l.weight_words)} words, "
              f"{l.shape[0]} float32 scales")


def cmd_image(args):
    if image_format(args.dir) == "int8":
        return _image_int8(args)
    img = read_image(args.dir, progress=not args.quiet)
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
    if args.layer is not None and args.image is None:
        raise BCQError("--layer names a layer of --image; give --image too")
    seeds = _seeds(args.seeds)
    if not 1 <= args.jobs <= 64:
        raise BCQError(f"--jobs {args.jobs}: builds run at once, an integer 1..64")
    if args.json:
        check_writable_file(args.json)   # before the minutes-long toolchain run, not after
    # One build id for every seed: the same design, whichever seed places it.
    build = functools.partial(build_bitstream, args.board, args.output, build_id=int(time.time()) & 0xFFFFFFFF,
                              image=args.image, layer=args.layer, progress=not args.quiet and args.jobs == 1)
    reports = {}

    def done(seed, report):
        # One report per seed: with several seeds, --json gets a list (written after each build).
        reports[seed] = report
        print(format_report(report), flush=True)
        if args.json:
            got = [reports[s] for s in seeds if s in reports]
            atomic_write(args.json, (json.dumps(got if args.seeds else report, indent=1) + "\n").encode())
    if args.jobs == 1 or len(seeds) == 1:
        for seed in seeds:
            done(seed, build(seed=seed))
    else:
        # Separate processes: Amaranth's build changes the working directory while it runs.
        with concurrent.futures.ProcessPoolExecutor(min(args.jobs, len(seeds))) as pool:
            futures = {pool.submit(build, seed=seed): seed for seed in seeds}
            for f in concurrent.futures.as_completed(futures):
                done(futures[f], f.result())
    reports = [reports[s] for s in seeds]
    if len(reports) > 1:
        print(f"{args.board}: post-route Fmax over seeds {', '.join(map(str, seeds))}: "
              + ", ".join(f"{r['fmax_mhz']:.1f}" for r in reports) + f" MHz (clock {reports[0]['target_mhz']:.1f} MHz)")
    # Exit non-zero when any build misses its clock (the bitstream exists but is out of spec).
    check_timing(reports, allow_fail=args.allow_timing_fail)


def _seeds(text):
    """``--seeds "1 2 3"`` -> [1, 2, 3]; None -> [None] (nextpnr's default seed)."""
    if text is None:
        return [None]
    try:
        seeds = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        seeds = []
    if not seeds or any(not 1 <= v < 1 << 31 for v in seeds):
        raise BCQError(f"--seeds {text!r}: nextpnr seeds, integers 1..{(1 << 31) - 1} separated by spaces")
    return seeds


def cmd_trace(args):
    scales = None
    if args.scales:
        try:
            scales = tuple(int(v, 0) for v in args.scales.split(","))
        except ValueError:
            raise BCQError(f"--scales {args.scales}: two scale codes W,X (e.g. 0x7f,0x38) are needed") from None
        if len(scales) != 2:
            raise BCQError(f"--scales {args.scales}: two scale codes W,X (e.g. 0x7f,0x38) are needed")
    result = trace_unit(args.unit, _config(args.config, args.preset), args.option, seed=args.seed, arrays=args.arrays,
                        scales=scales, codebooks=load_codebooks(args.codebooks) if args.codebooks else None)
    print(format_trace(result))
    if result.first_difference:
        stage, index = result.first_difference
        raise BCQError(f"the RTL differs from the golden model, first at stage {stage} (index {index})")


# -- parser ------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line error format (exit status 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"bcq: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _int_range(low, high=None):
    """An argparse type: an integer in [low, high]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"{value if abs(value) < 10**20 else f'{value:.3g}'} is out of "
                                             f"range; allowed: {allowed}")
        return value
    return parse


def _preset_args(p, codebook_source=False):
    p.add_argument("--preset", choices=list(PRESETS),
                   help="named BCQ config (default: " + next(iter(PRESETS)) + "); --config changes fields of it")
    if codebook_source:
        p.add_argument("--source", default=DEFAULT_SOURCE, choices=CODEBOOK_SOURCES,
                       help="which shipped codebooks (without --codebooks): calibrated on the synthetic "
                            "mix or on MiniLM-L6 data")


def _common(quiet=True):
    """Options every subcommand takes (after its name, too)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the traceback of an error")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    return p


def build_parser():
    p = _Parser(prog="bcq", description="W4A4 LO-BCQ quantizer, golden model and RTL generator")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = [_common()]

    q = sub.add_parser("quantize", help="quantize a tensor file and report SQNR", parents=[_common(quiet=False)])
    q.add_argument("input", help="tensor saved with torch.save (.pt), float16/bfloat16/float32/float64")
    q.add_argument("-o", "--output", help="write the quantize-dequantized tensor here (.pt)")
    q.add_argument("--format", default="lobcq", choices=FORMATS)
    q.add_argument("--codebooks", help="codebook JSON from 'bcq calibrate' (lobcq only; default: the shipped set)")
    q.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4 (lobcq only)")
    _preset_args(q, codebook_source=True)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_quantize)

    c = sub.add_parser("calibrate", help="calibrate LO-BCQ codebooks and write them as JSON", parents=common)
    c.add_argument("inputs", nargs="*", help="tensors (.pt) to calibrate on (default: the synthetic mix)")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--synthetic", action="store_true", help="add the shipped synthetic calibration mix")
    c.add_argument("--minilm", action="store_true",
                   help="add MiniLM-L6's linear weights and recorded inputs on the calibration sentences")
    c.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4")
    _preset_args(c)
    c.add_argument("--iters", type=_int_range(1), default=30)
    c.add_argument("--seed", type=_int_range(0, MAX_SEED), default=0)
    c.add_argument("--max-blocks", type=_int_range(1), default=1 << 16)
    c.add_argument("--device", default="cpu", help="cpu (reference) or cuda")
    c.set_defaults(func=cmd_calibrate)

    v = sub.add_parser("verilog", help="write a unit's Verilog", parents=common)
    v.add_argument("--unit", required=True, help=f"one of {', '.join(UNITS)}")
    v.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4 (bcq-dot, gemv)")
    _preset_args(v)
    v.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="hardware parameter, e.g. blocks_per_cycle=2, max_len=8192")
    v.add_argument("--image", help="gemv, bxp-engine: image directory whose layer initializes the memories (it "
                   "fixes the config, lanes and blocks_per_cycle; for bxp-engine an int8 image)")
    v.add_argument("--layer", help="with --image: which layer (default: the first)")
    v.add_argument("-o", "--output", required=True,
                   help="a .v file, or a directory (then <module>.v in it); gemv memories are in the Verilog")
    v.set_defaults(func=cmd_verilog)

    w = sub.add_parser("weights", help="encode a model's weights into an engine image (LO-BCQ or INT8)", parents=common)
    w.add_argument("model", help="state_dict (.pt) or .safetensors file")
    w.add_argument("-o", "--output", required=True, help="image directory (replaced atomically if it holds an image)")
    w.add_argument("--layers", nargs="+", help="tensor names (default: every 2-D weight that fits, except "
                   "embedding tables)")
    w.add_argument("--format", choices=["lobcq", "int8"], default="lobcq",
                   help="lobcq: LO-BCQ for the BCQ engine (gemv); int8: symmetric per-channel integers for the "
                   "Ax-BxP engine (bxp-engine)")
    w.add_argument("--mode", help="int8: the MAC mode the layers run in (sets their precision and columns per "
                   f"beat; default exact8): {', '.join(m.name for m in DEFAULT_BXP.modes)}")
    w.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4")
    _preset_args(w, codebook_source=True)
    w.add_argument("--codebooks", help="codebook JSON (default: the shipped set)")
    w.add_argument("--lanes", type=_int_range(1), default=4, help="engine lanes R (rows in parallel)")
    w.add_argument("--blocks-per-cycle", type=_int_range(1), default=None, help="lobcq: blocks per beat (default 1)")
    w.add_argument("--force", action="store_true", help="write into a non-empty directory that holds no image "
                   "(its files are kept)")
    w.add_argument("--search", action="store_true", help="lobcq: the weight search (each array's scale code and "
                   "each block's codebook by least error; docs/arithmetic.md section 1)")
    w.add_argument("--channel-energy", metavar="FILE", help="lobcq: .pt/.safetensors of layer -> mean square of each "
                   "input channel on calibration data; the search weighs errors by it (implies --search)")
    w.add_argument("--pow2-tensor-scale", action="store_true", help="lobcq: each layer's tensor scale is a power of "
                   "two (the board's BF16 outputs need it: Accelerator.gemv_bf16)")
    w.set_defaults(func=cmd_weights)

    im = sub.add_parser("image", help="check or show an image directory", parents=common)
    im.add_argument("action", choices=["verify", "show"])
    im.add_argument("dir")
    im.set_defaults(func=cmd_image)

    b = sub.add_parser("build", help="build a bitstream for a board (YoWASP toolchain from PyPI)", parents=common)
    b.add_argument("--board", required=True, help=" or ".join(BOARDS))
    b.add_argument("-o", "--output", default="build", help="build directory (a folder per board)")
    b.add_argument("--image", help="bake this weight image (built with --lanes of the board's engine) into the RAMs")
    b.add_argument("--layer", help="with --image: which layer (default: the first)")
    b.add_argument("--json", help="also write the report as JSON here (its directory must exist)")
    b.add_argument("--seeds", help='nextpnr seeds, e.g. "1 2 3": one build each (in OUTPUT/BOARD/seed-N)')
    b.add_argument("--jobs", type=int, default=1, help="with --seeds: builds run at once (default 1)")
    b.add_argument("--allow-timing-fail", action="store_true",
                   help="exit 0 even when a build's post-route Fmax is below its clock (default: exit non-zero)")
    b.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    b.set_defaults(func=cmd_build)

    t = sub.add_parser("trace", help="one vector through the golden model and the RTL, stage by stage",
                       parents=common)
    t.add_argument("--unit", default="bcq-dot", help="a unit with trace taps (bcq-dot)")
    t.add_argument("--config", help="BCQ config, e.g. block_len=4,n_codebooks=4")
    _preset_args(t)
    t.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="hardware parameter, e.g. blocks_per_cycle=2")
    t.add_argument("--codebooks", help="codebook JSON (default: random codebooks from --seed)")
    t.add_argument("--seed", type=_int_range(0, MAX_SEED), default=0, help="draws the vector (and the codebooks)")
    t.add_argument("--arrays", type=int, default=1, help="block arrays in the vector")
    t.add_argument("--scales", help="force the scale codes W,X of every array, e.g. 0x7f,0x38")
    t.set_defaults(func=cmd_trace)

    d = sub.add_parser("demo", help="the whole flow on a shipped layer: image, Verilog, Verilator, check",
                       parents=common)
    d.add_argument("-o", "--output", default="out/demo")
    d.add_argument("--lanes", type=_int_range(1, 64), default=4)
    d.add_argument("--vectors", type=_int_range(1), default=4)
    d.add_argument("--waves", action="store_true", help="record an FST waveform")
    d.set_defaults(func=cmd_demo)
    return p


def _one_line(text):
    return " ".join(str(text).split("\n")).strip()


def main(argv=None):
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        args.func(args)
    except BCQError as e:
        if debug:
            traceback.print_exc()
        print(f"bcq: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # the environment: permissions, a full disk, a vanished file
        if debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"bcq: error: {where}{_one_line(e.strerror or e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bcq: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"bcq: internal error: {type(e).__name__}: {_one_line(e)[:300]} (a bug; 'bcq --debug ...' shows "
              "the traceback)", file=sys.stderr)
        return EXIT_BUG
    return 0


if __name__ == "__main__":
    sys.exit(main())
