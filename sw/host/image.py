"""Weight images: LO-BCQ-encoded layers as the memory words the matrix-vector engine reads.

An image is a directory::

    manifest.json                 kind, version, BCQ config, engine layout, layers, SHA-256 of
                                  every file and of the manifest itself
    codebook.hex / codebook.bin   Nc*16 entries
    <layer>.weights.hex / .bin    weight words   (layout: bcq.sw.contract.image_layout.EngineLayout)
    <layer>.scales.hex / .bin     scale words

``.hex`` is ``$readmemh`` text (one word per line, ceil(width/4) hex digits); ``.bin`` is raw
little-endian, ceil(width/8) bytes per word. Every file is written atomically (temp file +
rename) and the manifest last, so an interrupted write never leaves an image that verifies.
"""

from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import re
import tempfile

import torch

from bcq.sw.contract.image_layout import EngineLayout, scale_words, weight_words, words_to_tensor
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError, ConfigError, FileFormatError
from bcq.sw.formats.lobcq import BCQTensor, encode
from bcq.sw.formats.numerics import scale_decode

__all__ = ["write_image", "read_image", "Image", "LayerImage", "IMAGE_KIND", "IMAGE_VERSION"]

IMAGE_KIND = "bcq-image"
IMAGE_VERSION = 1
MAX_ROWS = 1 << 20
MAX_COLS = 1 << 20


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
    """

    name: str
    shape: tuple
    weights: BCQTensor
    weight_words: list
    scale_words: list


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
        Layer name -> :class:`LayerImage`, in manifest order.
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


# -- files -------------------------------------------------------------------------------------

def _atomic_write(path: Path, payload: bytes):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hex(words, width):
    digits = (width + 3) // 4
    return "".join(f"{w:0{digits}x}\n" for w in words).encode()


def _bin(words, width):
    n = (width + 7) // 8
    return b"".join(w.to_bytes(n, "little") for w in words)


def _safe_name(name):
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name.startswith("."):
        raise BCQError(f"layer name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def write_image(out_dir, layers, codebooks: Codebooks, layout: EngineLayout):
    """Encode each 2-D float weight of ``layers`` (name -> tensor) and write the image.
    Returns the manifest (a dict)."""
    if codebooks.config != layout.config:
        raise BCQError("the codebooks were calibrated for another config than the engine layout's")
    if not layers:
        raise BCQError("no layers to write")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileFormatError(out, f"cannot create the image directory: {e.strerror}") from None
    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # the old image is invalid from here until we finish
    files = {}

    def emit(stem, words, width):
        entry = {"depth": len(words), "width": width}
        for ext, payload in (("hex", _hex(words, width)), ("bin", _bin(words, width))):
            name = f"{stem}.{ext}"
            _atomic_write(out / name, payload)
            files[name] = hashlib.sha256(payload).hexdigest()
            entry[ext] = name
        return entry

    cfg = layout.config
    mask = (1 << cfg.entry_bits) - 1
    cb_entry = emit("codebook", [v & mask for v in codebooks.entries.flatten().tolist()], cfg.entry_bits)
    layer_entries = []
    for name, w in layers.items():
        _safe_name(name)
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
            raise BCQError(f"layer {name}: a 2-D floating-point weight is needed, got "
                           f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
        rows, cols = w.shape
        if rows > MAX_ROWS or cols > MAX_COLS:
            raise BCQError(f"layer {name}: shape {tuple(w.shape)} exceeds {MAX_ROWS} x {MAX_COLS}")
        try:
            layout.check_shape(rows, cols)
        except ConfigError as e:
            raise BCQError(f"layer {name}: {e}") from None
        q = encode(w, codebooks)
        layer_entries.append({
            "name": name, "shape": [rows, cols], "tensor_scale": q.tensor_scale,
            "weights": emit(f"{name}.weights", weight_words(q, layout), layout.weight_width),
            "scales": emit(f"{name}.scales", scale_words(q, layout), layout.scale_width)})
    manifest = {"kind": IMAGE_KIND, "version": IMAGE_VERSION, "config": cfg.to_dict(),
                "layout": layout.describe(), "codebook": cb_entry, "layers": layer_entries, "sha256": files}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    _atomic_write(manifest_path, _manifest_text(manifest).encode())
    return manifest


def _manifest_text(manifest):
    return json.dumps(manifest, indent=1) + "\n"


def manifest_digest(manifest):
    """SHA-256 of the manifest's canonical JSON without its own digest field: an edited manifest
    (a changed shape, scale, file name) fails verification like a damaged data file."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _field(obj, key, kind, where, source):
    if not isinstance(obj, dict) or key not in obj:
        raise FileFormatError(source, f"missing field {where}{key}")
    v = obj[key]
    if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
        raise FileFormatError(source, f"field {where}{key} must be an integer, not {v!r}")
    if kind is not int and not isinstance(v, kind):
        raise FileFormatError(source, f"field {where}{key} has the wrong type ({type(v).__name__})")
    return v


def _read_words(root, entry, where, manifest_path, checksums):
    depth = _field(entry, "depth", int, where, manifest_path)
    width = _field(entry, "width", int, where, manifest_path)
    if depth < 0 or not 0 < width <= 4096:
        raise FileFormatError(manifest_path, f"field {where}depth/width out of range ({depth}, {width})")
    data = {}
    for ext in ("hex", "bin"):
        name = _field(entry, ext, str, where, manifest_path)
        if Path(name).name != name:
            raise FileFormatError(manifest_path, f"field {where}{ext}: {name!r} is not a plain file name")
        path = root / name
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            raise FileFormatError(path, "missing (listed in manifest.json)") from None
        except OSError as e:
            raise FileFormatError(path, f"cannot read: {e.strerror}") from None
        want = checksums.get(name) if isinstance(checksums, dict) else None
        if want is None:
            raise FileFormatError(manifest_path, f"no SHA-256 for {name} in field sha256")
        if hashlib.sha256(payload).hexdigest() != want:
            raise FileFormatError(path, "SHA-256 mismatch: the file is damaged or was changed")
        data[ext] = payload
    nbytes = (width + 7) // 8
    if len(data["bin"]) != depth * nbytes:
        raise FileFormatError(root / entry["bin"], f"{len(data['bin'])} bytes; depth {depth} x {nbytes} bytes expected")
    words = [int.from_bytes(data["bin"][i * nbytes:(i + 1) * nbytes], "little") for i in range(depth)]
    if any(w >> width for w in words):
        raise FileFormatError(root / entry["bin"], f"a word has bits above width {width}")
    try:
        hex_words = [int(line, 16) for line in data["hex"].decode().split()]
    except (UnicodeDecodeError, ValueError):
        raise FileFormatError(root / entry["hex"], "not $readmemh text") from None
    if hex_words != words:
        raise FileFormatError(root / entry["hex"], f"differs from {entry['bin']}")
    return words


def read_image(path, expect: EngineLayout | None = None) -> Image:
    """Load and verify an image directory; any damage raises FileFormatError naming the file
    and field. With ``expect``, an image for another config or engine layout is refused."""
    root = Path(path)
    manifest_path = root / "manifest.json"
    if not root.is_dir():
        raise FileFormatError(root, "no such image directory")
    try:
        manifest_text = manifest_path.read_text()
        manifest = json.loads(manifest_text)
    except FileNotFoundError:
        raise FileFormatError(manifest_path, "missing: not an image directory (or an interrupted write)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(manifest_path, f"not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != IMAGE_KIND:
        raise FileFormatError(manifest_path, f"field kind must be {IMAGE_KIND!r}")
    if manifest.get("version") != IMAGE_VERSION:
        raise FileFormatError(manifest_path, f"field version {manifest.get('version')!r} is not supported "
                              f"(this program reads version {IMAGE_VERSION})")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise FileFormatError(manifest_path, "field manifest_sha256: checksum mismatch, the manifest was "
                              "damaged or edited")
    try:
        config = BCQConfig.from_dict(manifest.get("config"), source="config")
        lay = _field(manifest, "layout", dict, "", manifest_path)
        layout = EngineLayout(config, _field(lay, "lanes", int, "layout.", manifest_path),
                              _field(lay, "blocks_per_cycle", int, "layout.", manifest_path))
    except ConfigError as e:
        raise FileFormatError(manifest_path, str(e)) from None
    if lay != layout.describe():
        raise FileFormatError(manifest_path, "field layout does not match the word layout this program writes")
    if expect is not None and expect != layout:
        raise FileFormatError(manifest_path, f"image is for lanes={layout.lanes}, blocks_per_cycle="
                              f"{layout.blocks_per_cycle}, {config.describe()}; the hardware was built for "
                              f"lanes={expect.lanes}, blocks_per_cycle={expect.blocks_per_cycle}, "
                              f"{expect.config.describe()}")
    checksums = manifest.get("sha256")
    cb_entry = _field(manifest, "codebook", dict, "", manifest_path)
    if (cb_entry.get("depth"), cb_entry.get("width")) != (config.n_codebooks * 16, config.entry_bits):
        raise FileFormatError(manifest_path, "field codebook: depth/width do not match the config")
    raw = _read_words(root, cb_entry, "codebook.", manifest_path, checksums)
    half = 1 << (config.entry_bits - 1)
    entries = torch.tensor([v - 2 * half if v >= half else v for v in raw]).reshape(config.n_codebooks, 16)
    codebooks = Codebooks(config, entries)
    layers = {}
    for i, entry in enumerate(_field(manifest, "layers", list, "", manifest_path)):
        where = f"layers[{i}]."
        name = _field(entry, "name", str, where, manifest_path)
        shape = _field(entry, "shape", list, where, manifest_path)
        if len(shape) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
            raise FileFormatError(manifest_path, f"field {where}shape must be [rows, cols]")
        rows, cols = shape
        if not (0 < rows <= MAX_ROWS and 0 < cols <= MAX_COLS) or cols % config.array_len:
            raise FileFormatError(manifest_path, f"field {where}shape {shape}: rows 1..{MAX_ROWS}, cols a "
                                  f"multiple of array_len={config.array_len} up to {MAX_COLS}")
        ts = entry.get("tensor_scale")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not ts > 0 or ts != ts or ts == float("inf"):
            raise FileFormatError(manifest_path, f"field {where}tensor_scale must be a positive finite number")
        for part, depth, width in (("weights", layout.weight_depth(rows, cols), layout.weight_width),
                                   ("scales", layout.scale_depth(rows, cols), layout.scale_width)):
            e = _field(entry, part, dict, where, manifest_path)
            if (e.get("depth"), e.get("width")) != (depth, width):
                raise FileFormatError(manifest_path, f"field {where}{part}: depth/width {e.get('depth')}/"
                                      f"{e.get('width')} do not match shape {shape} ({depth}/{width} expected)")
        ww = _read_words(root, entry["weights"], f"{where}weights.", manifest_path, checksums)
        sw = _read_words(root, entry["scales"], f"{where}scales.", manifest_path, checksums)
        q = words_to_tensor(ww, sw, (rows, cols), codebooks, float(ts), layout)
        if q.selectors.numel() and int(q.selectors.max()) >= config.n_codebooks:
            raise FileFormatError(root / entry["weights"]["bin"], f"a selector exceeds n_codebooks={config.n_codebooks}")
        try:
            scale_decode(q.scales, config.scale, what=f"layer {name} scale code")
        except BCQError as e:
            raise FileFormatError(root / entry["scales"]["bin"], str(e)) from None
        layers[name] = LayerImage(name, (rows, cols), q, ww, sw)
    # Last: byte-for-byte the text the writer produces, so no change to the file goes unseen
    # (whitespace edits or a lost final newline keep the JSON and its digest intact).
    if manifest_text != _manifest_text(manifest):
        raise FileFormatError(manifest_path, "not the text this program writes (edited or damaged)")
    return Image(root, layout, codebooks, layers, manifest)
