"""Weight images: LO-BCQ-encoded layers as the memory words the matrix-vector engine reads
(and, ``format`` int8, integer per-channel layers for the Ax-BxP engine: :func:`write_int8_image`).

An image is a directory::

    manifest.json                 kind, version, BCQ config, engine layout, layers, SHA-256 of
                                  every file and of the manifest itself
    codebook.hex / codebook.bin   Nc*16 entries
    <layer>.weights.hex / .bin    weight words   (layout: bcq.sw.contract.image_layout.EngineLayout)
    <layer>.scales.hex / .bin     scale words

``.hex`` is ``$readmemh`` text (one word per line, ceil(width/4) hex digits); ``.bin`` is raw
little-endian, ceil(width/8) bytes per word.

Writing is atomic for the whole directory (:mod:`bcq.sw.host.atomic_dir`): the new image is
built beside the old one and swapped in once complete, so an interrupted write leaves the old
image whole; files in the directory that are not part of the old image are kept, and a
non-empty directory that holds no image is refused unless ``force``.

Reading opens regular files only (no FIFO or device; links must stay inside the directory), with
every size known from the manifest before a byte is read, and refuses any damage with the file
and field named (:class:`FileFormatError`).
"""

from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import re

import torch

from bcq.sw.contract.image_layout import (BxPLayout, EngineLayout, bxp_weight_words, bxp_words_to_tensor, scale_words,
                                         weight_words, words_to_tensor)
from bcq.sw.formats.axbxp import BxPConfig, Mode, quantize_symmetric
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError, ConfigError, FileFormatError
from bcq.sw.formats.files import loads_json, read_regular
from bcq.sw.formats.lobcq import BCQTensor, check_weight_args, encode, encode_weights
from bcq.sw.formats.numerics import scale_decode

from .atomic_dir import DirectoryUpdate
from .progress import bar

__all__ = ["write_image", "read_image", "image_files", "Image", "LayerImage", "IMAGE_KIND", "IMAGE_VERSION",
           "FLOAT_DTYPES", "image_format", "write_int8_image", "read_int8_image", "Int8Image", "Int8Layer"]

IMAGE_KIND = "bcq-image"
IMAGE_VERSION = 2  # 2: weight words hold decoded codewords (issue 13), 1: indices
MAX_ROWS = 1 << 20
MAX_COLS = 1 << 20
# A manifest holds about 600 bytes per layer: 16 MiB is tens of thousands of layers.
MAX_MANIFEST_BYTES = 16 << 20
MANIFEST_MAX_DEPTH = 8  # manifest > layout > weight_word > lane_fields > [i] > field: 6 levels
MANIFEST = "manifest.json"
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LAYER_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_FILE_NAME = re.compile(r"codebook\.(hex|bin)|[A-Za-z0-9_\-][A-Za-z0-9_.\-]*\.(weights|scales)\.(hex|bin)")


@dataclass
class LayerImage:
    """One layer of a weight image.

    Members
    -------
    name : str
        The tensor's name in the model.
    shape : tuple
        (rows, cols) of the weight matrix.
    weights : :class:`BCQTensor`
        The encoded matrix (decoded back from the memory words).
    weight_words, scale_words : list of int
        The engine's memory contents, in address order (``EngineLayout``).
    layout : :class:`EngineLayout` or None
        The word layout of those words (set by :func:`read_image`).
    """

    name: str
    shape: tuple
    weights: BCQTensor
    weight_words: list
    scale_words: list
    layout: EngineLayout | None = None


@dataclass
class Image:
    """A verified weight image (:func:`read_image`).

    Members
    -------
    path : Path
        Its directory.
    layout : :class:`EngineLayout`
        The engine word layout (and format config) it was written for.
    codebooks : :class:`Codebooks`
        The codebook table.
    layers : dict
        Layer name -> :class:`LayerImage`, in manifest order (at least one).
    manifest : dict
        The parsed manifest.json.
    """

    path: Path
    layout: EngineLayout
    codebooks: Codebooks
    layers: dict  # name -> LayerImage
    manifest: dict

    @property
    def config(self) -> BCQConfig:
        return self.layout.config

    def layer(self, name=None):
        """The layer ``name`` (default: the first), or a :class:`BCQError` listing the layers."""
        if name is None:
            return next(iter(self.layers.values()))
        if name not in self.layers:
            raise BCQError(f"image {self.path} has no layer {name!r}; layers: {', '.join(self.layers)}")
        return self.layers[name]


# -- writing -----------------------------------------------------------------------------------

def _hex(words, width):
    digits = (width + 3) // 4
    return "".join(f"{w:0{digits}x}\n" for w in words).encode()


def _bin(words, width):
    n = (width + 7) // 8
    return b"".join(w.to_bytes(n, "little") for w in words)


def _file_sizes(depth, width):
    return {"hex": depth * ((width + 3) // 4 + 1), "bin": depth * ((width + 7) // 8)}


def _safe_name(name):
    if not isinstance(name, str) or not _LAYER_NAME.fullmatch(name) or len(name) > 200:
        raise BCQError(f"layer name {name!r}: use letters, digits, '.', '_' and '-' only (not first '.'), "
                       "at most 200 characters")
    return name


def _check_layer(name, w, layout):
    """Everything that can be wrong with one layer, found before any file is written."""
    _safe_name(name)
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
        raise BCQError(f"layer {name}: a 2-D floating-point weight is needed, got "
                       f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}"
                       + (f" of {w.dtype}" if isinstance(w, torch.Tensor) else ""))
    if w.dtype not in FLOAT_DTYPES:
        raise BCQError(f"layer {name}: dtype {w.dtype} is not supported; allowed: "
                       f"{', '.join(str(d) for d in FLOAT_DTYPES)} (a scaled FP8 weight needs its scale applied first)")
    rows, cols = w.shape
    if not (0 < rows <= MAX_ROWS and 0 < cols <= MAX_COLS):
        raise BCQError(f"layer {name}: shape {tuple(w.shape)}; rows and columns must be 1..{MAX_ROWS}")
    try:
        layout.check_shape(rows, cols)
    except ConfigError as e:
        raise BCQError(f"layer {name}: {e}") from None
    if not torch.isfinite(w).all():
        raise BCQError(f"layer {name} contains NaN or Inf: quantize finite values only")


def write_image(out_dir, layers, codebooks: Codebooks, layout: EngineLayout, *, force=False, progress=False,
                log=None, search=False, channel_energy=None, pow2_tensor_scale=False):
    """Encode each 2-D float weight of ``layers`` and write the image directory atomically.

    Parameters
    ----------
    out_dir : path-like
        The image directory: created, or replaced when it holds an image (files in it that are
        not part of that image are kept). A non-empty directory without an image is refused
        unless ``force``.
    layers : dict
        Layer name -> 2-D floating-point tensor (float16, bfloat16, float32 or float64).
    codebooks : :class:`Codebooks`
        The frozen codebooks; their config must be ``layout``'s.
    layout : :class:`EngineLayout`
        The engine word layout to write.
    force : bool
        Write into a non-empty directory that holds no image (its files are kept).
    progress : bool
        Show a bar per layer on stderr (when it is a terminal).
    log : callable, optional
        Called with a line for anything worth telling (leftovers of an interrupted write).
    search : bool
        Encode with the weight search (:func:`bcq.sw.formats.lobcq.encode_weights`: each array's
        scale code and each block's codebook by least error) instead of :func:`encode`.
    channel_energy : dict, optional
        Layer name -> mean square of each of its input channels on calibration data (1-D float,
        one value per column): the search then weighs each weight's error by it. Implies
        ``search``; every layer needs an entry.
    pow2_tensor_scale : bool
        Each layer's tensor scale is the power of two at or above the FP32 one, so that the
        board can return its outputs in BF16 (``Accelerator.gemv_bf16``: the output converter
        adds the scale's exponent; docs/arithmetic.md section 8).

    Returns
    -------
    dict
        The manifest. Every layer is checked (name, shape, dtype, finite values) before anything
        is written; on any error the old directory is left as it was.
    """
    if not isinstance(codebooks, Codebooks) or not isinstance(layout, EngineLayout):
        raise BCQError("write_image needs a Codebooks and an EngineLayout")
    if codebooks.config != layout.config:
        raise BCQError("the codebooks were calibrated for another config than the engine layout's")
    if not isinstance(layers, dict) or not layers:
        raise BCQError("no layers to write")
    for name, w in layers.items():
        _check_layer(name, w, layout)
    if channel_energy is not None:
        missing = [name for name in layers if name not in channel_energy]
        if missing:
            raise BCQError(f"channel energies: no entry for layer {missing[0]!r} (every layer written needs one; "
                           f"{len(missing)} missing)")
        for name, w in layers.items():
            check_weight_args(w, codebooks.config, channel_energy[name], what=f"layer {name}")
        search = True
    cfg = layout.config

    def body(emit):
        mask = (1 << cfg.entry_bits) - 1
        cb_entry = emit("codebook", [v & mask for v in codebooks.entries.flatten().tolist()], cfg.entry_bits)
        layer_entries = []
        for name, w in bar(layers.items(), desc="encode + write", total=len(layers), unit="layer",
                           enabled=progress):
            rows, cols = w.shape
            q = (encode_weights(w, codebooks, channel_energy=None if channel_energy is None else channel_energy[name],
                                pow2_tensor_scale=pow2_tensor_scale)
                 if search else encode(w, codebooks, pow2_tensor_scale=pow2_tensor_scale))
            layer_entries.append({
                "name": name, "shape": [rows, cols], "tensor_scale": q.tensor_scale,
                "weights": emit(f"{name}.weights", weight_words(q, layout), layout.weight_width),
                "scales": emit(f"{name}.scales", scale_words(q, layout), layout.scale_width)})
        return {"config": cfg.to_dict(), "layout": layout.describe(), "codebook": cb_entry, "layers": layer_entries}

    return _write_dir(out_dir, body, force=force, log=log)


def _write_dir(out_dir, body, *, force, log):
    """The write of either image kind: ``body(emit)`` writes the word files through
    ``emit(stem, words, width)`` (a .hex and a .bin each, hashed) and returns the manifest's
    own fields; the manifest gets the files' hashes and its digest, and the new directory
    replaces the old one atomically (:class:`bcq.sw.host.atomic_dir.DirectoryUpdate`).
    Returns the manifest."""
    files = {}
    with DirectoryUpdate(out_dir, image_files, anchor=MANIFEST, force=force, what="image", log=log) as out:
        def emit(stem, words, width):
            entry = {"depth": len(words), "width": width}
            for ext, payload in (("hex", _hex(words, width)), ("bin", _bin(words, width))):
                name = f"{stem}.{ext}"
                out.write(name, payload)
                files[name] = hashlib.sha256(payload).hexdigest()
                entry[ext] = name
            return entry

        manifest = {"kind": IMAGE_KIND, "version": IMAGE_VERSION, **body(emit), "sha256": files}
        manifest["manifest_sha256"] = manifest_digest(manifest)
        out.write(MANIFEST, _manifest_text(manifest).encode())
        out.commit()
    return manifest


def _manifest_text(manifest):
    return json.dumps(manifest, indent=1) + "\n"


def manifest_digest(manifest):
    """SHA-256 of the manifest's canonical JSON without its own digest field: an edited manifest
    (a changed shape, scale, file name) fails verification like a damaged data file."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# -- reading -----------------------------------------------------------------------------------

def _load_manifest(root):
    """(text, manifest dict) of ``root``'s manifest: read with every file check, kind, version
    and the manifest's own digest verified."""
    manifest_path = root / MANIFEST
    if not os.path.lexists(manifest_path):
        raise FileFormatError(manifest_path, "missing: not an image directory (or an interrupted write)")
    raw = read_regular(manifest_path, max_bytes=MAX_MANIFEST_BYTES, inside=root, what="manifest")
    manifest = loads_json(raw, source=manifest_path, max_depth=MANIFEST_MAX_DEPTH)
    if not isinstance(manifest, dict) or manifest.get("kind") != IMAGE_KIND:
        raise FileFormatError(manifest_path, f"field kind must be {IMAGE_KIND!r}")
    if manifest.get("version") != IMAGE_VERSION:
        raise FileFormatError(manifest_path, f"field version {manifest.get('version')!r} is not supported "
                              f"(this program reads version {IMAGE_VERSION})")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise FileFormatError(manifest_path, "field manifest_sha256: checksum mismatch, the manifest was "
                              "damaged or edited")
    return raw.decode("utf-8"), manifest


def image_files(directory):
    """The names of the files the image in ``directory`` consists of (its manifest and every
    file it lists under a name the writer uses): what a new image may replace. Raises
    :class:`FileFormatError` when ``directory`` holds no image whose manifest verifies."""
    root = Path(directory)
    _, manifest = _load_manifest(root)
    listed = manifest.get("sha256")
    if not isinstance(listed, dict):
        raise FileFormatError(root / MANIFEST, "field sha256 must be an object")
    return {MANIFEST} | {name for name in listed if isinstance(name, str) and _FILE_NAME.fullmatch(name)}


def _field(obj, key, kind, where, source):
    if not isinstance(obj, dict) or key not in obj:
        raise FileFormatError(source, f"missing field {where}{key}")
    v = obj[key]
    if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
        raise FileFormatError(source, f"field {where}{key} must be an integer, not {v!r}"[:300])
    if kind is not int and not isinstance(v, kind):
        raise FileFormatError(source, f"field {where}{key} has the wrong type ({type(v).__name__})")
    return v


def _read_words(root, entry, stem, depth, width, where, manifest_path, checksums, source):
    """The words of one memory file pair, after every check: the file names the writer uses,
    sizes from depth and width (checked before reading), SHA-256, .hex == .bin. ``source`` says
    where the expected depth and width come from (``"shape [8, 64]"``)."""
    got = (_field(entry, "depth", int, where, manifest_path), _field(entry, "width", int, where, manifest_path))
    if got != (depth, width):
        raise FileFormatError(manifest_path, f"field {where}depth/width {got[0]}/{got[1]} do not match "
                              f"{source} ({depth}/{width} expected)"[:300])
    data = {}
    for ext, size in _file_sizes(depth, width).items():
        name = _field(entry, ext, str, where, manifest_path)
        if name != f"{stem}.{ext}":
            raise FileFormatError(manifest_path, f"field {where}{ext}: {name!r} is not the file name "
                                  f"{stem}.{ext} the writer uses"[:300])
        want = checksums.get(name)
        if not isinstance(want, str):
            raise FileFormatError(manifest_path, f"no SHA-256 for {name} in field sha256")
        path = root / name
        if not os.path.lexists(path):
            raise FileFormatError(path, f"missing (listed in {MANIFEST})")
        payload = read_regular(path, size=size, inside=root, what=f"{ext} file of {depth} words of {width} bits")
        if hashlib.sha256(payload).hexdigest() != want:
            raise FileFormatError(path, "SHA-256 mismatch: the file is damaged or was changed")
        data[ext] = payload
    nbytes = (width + 7) // 8
    raw = data["bin"]
    words = [int.from_bytes(raw[i:i + nbytes], "little") for i in range(0, len(raw), nbytes)]
    if any(w >> width for w in words):
        raise FileFormatError(root / entry["bin"], f"a word has bits above width {width}")
    if data["hex"] != _hex(words, width):
        raise FileFormatError(root / entry["hex"], f"differs from {entry['bin']}")
    return words


def read_image(path, expect: EngineLayout | None = None, *, progress=False) -> Image:
    """Load and verify an image directory.

    Parameters
    ----------
    path : path-like
        The image directory.
    expect : :class:`EngineLayout`, optional
        Refuse an image for another config or engine layout.
    progress : bool
        Show a bar per layer on stderr (when it is a terminal).

    Raises
    ------
    FileFormatError
        Any damage, naming the file and field: a missing, extra-large, special or outside file,
        a checksum, shape, name or layout that does not match, an image with no layers.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileFormatError(root, "not a directory" if os.path.lexists(root) else "no such image directory")
    manifest_path = root / MANIFEST
    manifest_text, manifest = _load_manifest(root)
    if manifest.get("format", "lobcq") != "lobcq":
        raise FileFormatError(manifest_path, f"field format is {manifest.get('format')!r}: this image is for the "
                              "Ax-BxP engine (bcq verilog --unit bxp-engine); the BCQ engine reads format lobcq")
    try:
        config = BCQConfig.from_dict(manifest.get("config"), source="config")
        lay = _field(manifest, "layout", dict, "", manifest_path)
        layout = EngineLayout(config, _field(lay, "lanes", int, "layout.", manifest_path),
                              _field(lay, "blocks_per_cycle", int, "layout.", manifest_path))
    except ConfigError as e:
        raise FileFormatError(manifest_path, str(e)[:300]) from None
    if lay != layout.describe():
        raise FileFormatError(manifest_path, "field layout does not match the word layout this program writes")
    if expect is not None and expect != layout:
        raise FileFormatError(manifest_path, f"image is for lanes={layout.lanes}, blocks_per_cycle="
                              f"{layout.blocks_per_cycle}, {config.describe()}; the hardware was built for "
                              f"lanes={expect.lanes}, blocks_per_cycle={expect.blocks_per_cycle}, "
                              f"{expect.config.describe()}")
    checksums = _field(manifest, "sha256", dict, "", manifest_path)
    entries = _field(manifest, "layers", list, "", manifest_path)
    if not entries:
        raise FileFormatError(manifest_path, "field layers is empty: an image holds at least one layer")
    cb_entry = _field(manifest, "codebook", dict, "", manifest_path)
    raw = _read_words(root, cb_entry, "codebook", config.n_codebooks * config.n_entries, config.entry_bits,
                      "codebook.", manifest_path, checksums, "the config")
    half = 1 << (config.entry_bits - 1)
    codebooks = Codebooks(config, torch.tensor([v - 2 * half if v >= half else v for v in raw])
                          .reshape(config.n_codebooks, config.n_entries))
    layers = {}
    listed = {"codebook.hex", "codebook.bin"}
    for i, entry in enumerate(bar(entries, desc="verify", unit="layer", enabled=progress)):
        where = f"layers[{i}]."
        name = _field(entry, "name", str, where, manifest_path)
        try:
            _safe_name(name)
        except BCQError as e:
            raise FileFormatError(manifest_path, f"field {where}name: {e}"[:300]) from None
        if name in layers:
            raise FileFormatError(manifest_path, f"field {where}name: layer {name!r} appears twice")
        shape = _field(entry, "shape", list, where, manifest_path)
        if len(shape) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
            raise FileFormatError(manifest_path, f"field {where}shape must be [rows, cols]")
        rows, cols = shape
        if not (0 < rows <= MAX_ROWS and 0 < cols <= MAX_COLS) or cols % config.array_len:
            raise FileFormatError(manifest_path, f"field {where}shape {shape}: rows 1..{MAX_ROWS}, cols a "
                                  f"multiple of array_len={config.array_len} up to {MAX_COLS}")
        ts = entry.get("tensor_scale")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not 0 < ts < float("inf"):
            raise FileFormatError(manifest_path, f"field {where}tensor_scale must be a positive finite number")
        ww = _read_words(root, _field(entry, "weights", dict, where, manifest_path), f"{name}.weights",
                         layout.weight_depth(rows, cols), layout.weight_width, f"{where}weights.", manifest_path,
                         checksums, f"shape {shape}")
        sw = _read_words(root, _field(entry, "scales", dict, where, manifest_path), f"{name}.scales",
                         layout.scale_depth(rows, cols), layout.scale_width, f"{where}scales.", manifest_path,
                         checksums, f"shape {shape}")
        try:
            q = words_to_tensor(ww, sw, (rows, cols), codebooks, float(ts), layout)
        except BCQError as e:
            raise FileFormatError(root / entry["weights"]["bin"], str(e)) from None
        try:
            scale_decode(q.scales, config.scale, what=f"layer {name} scale code")
        except BCQError as e:
            raise FileFormatError(root / entry["scales"]["bin"], str(e)) from None
        layers[name] = LayerImage(name, (rows, cols), q, ww, sw, layout)
        listed |= {f"{name}.{part}.{ext}" for part in ("weights", "scales") for ext in ("hex", "bin")}
    extra = sorted(set(checksums) - listed)
    if extra:
        raise FileFormatError(manifest_path, f"field sha256 lists {extra[0]!r}, which no layer uses"[:300])
    # Last: byte-for-byte the text the writer produces, so no change to the file goes unseen
    # (whitespace edits or a lost final newline keep the JSON and its digest intact).
    if manifest_text != _manifest_text(manifest):
        raise FileFormatError(manifest_path, "not the text this program writes (edited or damaged)")
    return Image(root, layout, codebooks, layers, manifest)


# -- INT8 images for the Ax-BxP engine ------------------------------------------------------------

INT8_FORMAT = "int8"
SCALE_WIDTH = 32   # per-channel scales: float32 bit patterns


@dataclass
class Int8Layer:
    """One layer of an int8 image.

    Members
    -------
    name : str
        The tensor's name in the model.
    shape : tuple
        (rows, cols).
    mode : :class:`bcq.sw.formats.axbxp.Mode`
        The MAC mode the layer runs in; its values are symmetric ``mode.precision``-bit integers.
    q : torch.Tensor
        The signed integer weights (int64, rows x cols), decoded back from the memory words.
    scales : torch.Tensor
        float32 per-output-channel scales (rows x 1): weight ~= q * scales.
    weight_words : list of int
        The engine's weight memory, address order (:class:`BxPLayout`).
    """

    name: str
    shape: tuple
    mode: Mode
    q: torch.Tensor
    scales: torch.Tensor
    weight_words: list


@dataclass
class Int8Image:
    """A verified int8 image (:func:`read_int8_image`).

    Members
    -------
    path : Path
        Its directory.
    layout : :class:`BxPLayout`
        The Ax-BxP engine layout (MAC config, rows R) it was written for.
    layers : dict
        Layer name -> :class:`Int8Layer`, in manifest order.
    manifest : dict
        The parsed manifest.json.
    """

    path: Path
    layout: BxPLayout
    layers: dict
    manifest: dict

    def layer(self, name=None):
        """The layer ``name`` (default: the first), or a :class:`BCQError` listing the layers."""
        if name is None:
            return next(iter(self.layers.values()))
        if name not in self.layers:
            raise BCQError(f"image {self.path} has no layer {name!r}; layers: {', '.join(self.layers)}")
        return self.layers[name]


def _float_bits(t):
    return t.float().contiguous().view(torch.int32).to(torch.int64).bitwise_and(0xFFFFFFFF).flatten().tolist()


def _bits_float(words):
    v = torch.tensor([w - (1 << 32) if w >= 1 << 31 else w for w in words], dtype=torch.int64)
    return v.to(torch.int32).view(torch.float32).reshape(-1, 1)


def write_int8_image(out_dir, layers, layout: BxPLayout, mode="exact8", *, force=False, progress=False, log=None):
    """Quantize each 2-D float weight of ``layers`` to symmetric per-output-channel integers of
    ``mode``'s precision (``bcq.sw.formats.axbxp.quantize_symmetric``; INT8 for the 8-bit modes)
    and write the image directory atomically (as :func:`write_image` does).

    Parameters
    ----------
    out_dir : path-like
        The image directory (see :func:`write_image`).
    layers : dict
        Layer name -> 2-D floating-point tensor.
    layout : :class:`BxPLayout`
        The Ax-BxP engine layout to write.
    mode : str
        The MAC mode every layer is written for (sets its precision and lanes per beat).
    force, progress, log
        As for :func:`write_image`.

    Returns
    -------
    dict
        The manifest.
    """
    if not isinstance(layout, BxPLayout):
        raise BCQError("write_int8_image needs a BxPLayout")
    md = layout.mode(mode)
    if not isinstance(layers, dict) or not layers:
        raise BCQError("no layers to write")
    for name, w in layers.items():
        _check_bxp_layer(name, w)

    def body(emit):
        entries = []
        for name, w in bar(layers.items(), desc="quantize + write", total=len(layers), unit="layer",
                           enabled=progress):
            q, s = quantize_symmetric(w, md.precision)
            entries.append({"name": name, "shape": list(w.shape), "mode": md.name,
                            "weights": emit(f"{name}.weights", bxp_weight_words(q, layout, md), layout.weight_width),
                            "scales": emit(f"{name}.scales", _float_bits(s), SCALE_WIDTH)})
        return {"format": INT8_FORMAT, "layout": layout.describe(), "layers": entries}

    return _write_dir(out_dir, body, force=force, log=log)


def _check_bxp_layer(name, w):
    _safe_name(name)
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.dtype not in FLOAT_DTYPES:
        raise BCQError(f"layer {name}: a 2-D floating-point weight is needed, got "
                       f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}"
                       + (f" of {w.dtype}" if isinstance(w, torch.Tensor) else ""))
    if not (0 < w.shape[0] <= MAX_ROWS and 0 < w.shape[1] <= MAX_COLS):
        raise BCQError(f"layer {name}: shape {tuple(w.shape)}; rows and columns must be 1..{MAX_ROWS}")
    if not torch.isfinite(w).all():
        raise BCQError(f"layer {name} contains NaN or Inf: quantize finite values only")


def _bxp_layout_from(lay, manifest_path):
    """The :class:`BxPLayout` a manifest's ``layout`` field describes (its modes included)."""
    try:
        modes = _field(lay, "modes", list, "layout.", manifest_path)
        if not all(isinstance(m, dict) for m in modes):
            raise FileFormatError(manifest_path, "field layout.modes must be a list of objects")
        cfg = BxPConfig(_field(lay, "n_bits", int, "layout.", manifest_path),
                        _field(lay, "block_bits", int, "layout.", manifest_path),
                        tuple(Mode(_field(m, "name", str, "layout.modes.", manifest_path),
                                   _field(m, "kind", str, "layout.modes.", manifest_path),
                                   _field(m, "precision", int, "layout.modes.", manifest_path),
                                   _field(m, "keep", int, "layout.modes.", manifest_path)) for m in modes))
        layout = BxPLayout(cfg, _field(lay, "rows", int, "layout.", manifest_path))
    except ConfigError as e:
        raise FileFormatError(manifest_path, str(e)[:300]) from None
    if lay != layout.describe():
        raise FileFormatError(manifest_path, "field layout does not match the word layout this program writes")
    return layout


def image_format(path):
    """``"lobcq"`` or ``"int8"``: the format field of the image in ``path`` (its manifest verified;
    a :class:`FileFormatError` when there is none)."""
    root = Path(path)
    if not root.is_dir():
        raise FileFormatError(root, "not a directory" if os.path.lexists(root) else "no such image directory")
    fmt = _load_manifest(root)[1].get("format", "lobcq")
    if fmt not in ("lobcq", INT8_FORMAT):
        raise FileFormatError(root / MANIFEST, f"field format {fmt!r}; allowed: lobcq, int8"[:300])
    return fmt


def read_int8_image(path, expect: BxPLayout | None = None, *, progress=False) -> Int8Image:
    """Load and verify an int8 image directory (every check of :func:`read_image`: file kinds,
    sizes known before reading, SHA-256, .hex == .bin, the manifest's own digest and text).

    Parameters
    ----------
    path : path-like
        The image directory.
    expect : :class:`BxPLayout`, optional
        Refuse an image written for another MAC config or row count.
    progress : bool
        Show a bar per layer on stderr (when it is a terminal).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileFormatError(root, "not a directory" if os.path.lexists(root) else "no such image directory")
    manifest_path = root / MANIFEST
    manifest_text, manifest = _load_manifest(root)
    if manifest.get("format", "lobcq") != INT8_FORMAT:
        raise FileFormatError(manifest_path, f"field format is {manifest.get('format', 'lobcq')!r}: the Ax-BxP "
                              "engine reads format int8 (bcq weights --format int8)")
    layout = _bxp_layout_from(_field(manifest, "layout", dict, "", manifest_path), manifest_path)
    if expect is not None and expect != layout:
        raise FileFormatError(manifest_path, f"image is for rows={layout.rows} and its own MAC config; the "
                              f"hardware was built for rows={expect.rows}, N={expect.config.n_bits}, "
                              f"k={expect.config.block_bits}, modes {', '.join(m.name for m in expect.config.modes)}")
    checksums = _field(manifest, "sha256", dict, "", manifest_path)
    entries = _field(manifest, "layers", list, "", manifest_path)
    if not entries:
        raise FileFormatError(manifest_path, "field layers is empty: an image holds at least one layer")
    layers, listed = {}, set()
    for i, entry in enumerate(bar(entries, desc="verify", unit="layer", enabled=progress)):
        where = f"layers[{i}]."
        name = _field(entry, "name", str, where, manifest_path)
        try:
            _safe_name(name)
            md = layout.mode(_field(entry, "mode", str, where, manifest_path))
        except BCQError as e:
            raise FileFormatError(manifest_path, f"field {where}: {e}"[:300]) from None
        if name in layers:
            raise FileFormatError(manifest_path, f"field {where}name: layer {name!r} appears twice")
        shape = _field(entry, "shape", list, where, manifest_path)
        if len(shape) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape) \
                or not (0 < shape[0] <= MAX_ROWS and 0 < shape[1] <= MAX_COLS):
            raise FileFormatError(manifest_path, f"field {where}shape must be [rows, cols], each 1..{MAX_ROWS}")
        rows, cols = shape
        ww = _read_words(root, _field(entry, "weights", dict, where, manifest_path), f"{name}.weights",
                         layout.weight_depth(rows, cols, md), layout.weight_width, f"{where}weights.",
                         manifest_path, checksums, f"shape {shape}, mode {md.name}")
        sw = _read_words(root, _field(entry, "scales", dict, where, manifest_path), f"{name}.scales", rows,
                         SCALE_WIDTH, f"{where}scales.", manifest_path, checksums, f"shape {shape}")
        q = bxp_words_to_tensor(ww, (rows, cols), layout, md)
        qmax = (1 << (md.precision - 1)) - 1
        if bxp_weight_words(q, layout, md) != ww or q.numel() and int(q.abs().max()) > qmax:
            raise FileFormatError(root / entry["weights"]["bin"], f"holds values outside the symmetric "
                                  f"{md.precision}-bit range of mode {md.name} or set padding bits")
        scales = _bits_float(sw)
        if not (torch.isfinite(scales).all() and (scales > 0).all()):
            raise FileFormatError(root / entry["scales"]["bin"], "a scale is not a positive finite float32")
        layers[name] = Int8Layer(name, (rows, cols), md, q, scales, ww)
        listed |= {f"{name}.{part}.{ext}" for part in ("weights", "scales") for ext in ("hex", "bin")}
    extra = sorted(set(checksums) - listed)
    if extra:
        raise FileFormatError(manifest_path, f"field sha256 lists {extra[0]!r}, which no layer uses"[:300])
    if manifest_text != _manifest_text(manifest):
        raise FileFormatError(manifest_path, "not the text this program writes (edited or damaged)")
    return Int8Image(root, layout, layers, manifest)
