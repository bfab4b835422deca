"""Host driver of the board's UART link (protocol: ``bcq.sw.contract.protocol``).

``Accelerator(transport)`` talks to a board (``Accelerator.open("/dev/ttyUSB0")``, pyserial) or to
the simulated board top (``sim/tb_board.py`` passes the same bytes through the UART pins on
Verilator). A transport has ``write(bytes)`` and ``read(n) -> bytes`` (fewer bytes, or none, when
nothing more has arrived yet).

The driver trusts nothing it reads: every reply is checked (sync byte, status, length against
what the request must return, CRC), STATUS is checked field by field (protocol version, sizes
that are possible) and then used to check every request against the board's identity (lanes,
word sizes, codebook size, maximum rows and columns) before a byte is sent. Each request has
its own deadline on a monotonic clock, so a silent board, or a transport whose ``read`` keeps
returning too few bytes, ends in a :class:`LinkError` after ``timeout`` seconds, never a hang.
"""

from dataclasses import make_dataclass
import math
import time

import torch

from bcq.sw.contract import protocol as P
from bcq.sw.contract.beats import activation_beats, activation_layout
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.encoder_int import TS_EXP_RANGE, float_bits, tensor_scale_exp
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden import to_value
from bcq.sw.formats.golden_bf16 import bf16_from_bits, pow2_exponent
from bcq.sw.formats.lobcq import BCQTensor, encode

from .image import Image, LayerImage

__all__ = ["Accelerator", "LinkError", "DeviceInfo", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 5.0  # seconds per request, on top of the bytes' time on the wire


class LinkError(BCQError):
    """The device answered with an error status, or the reply was damaged, missing or not what
    the request must return."""


# What STATUS reports: one attribute per field of the protocol's STATUS_LAYOUT.
DeviceInfo = make_dataclass("DeviceInfo", [(name, int) for name, _ in P.STATUS_LAYOUT], frozen=True)
DeviceInfo.__doc__ = """The board's identity, as its STATUS reply reports it (fields of
:data:`bcq.sw.contract.protocol.STATUS_LAYOUT`: ``build_id``, ``lanes``, ``max_rows``, ``max_cols``,
``weight_bytes``, ``scale_bytes``, ``beat_bytes``, ``result_bytes``, ``codebook_entries``,
``entry_bits``, ``encoder_lanes`` (0: no BF16 path), ``protocol_version``)."""

# The smallest value each STATUS field can take on a real board (the entries: one codebook of 16).
_STATUS_MIN = {"lanes": 1, "max_rows": 1, "max_cols": 1, "weight_bytes": 1, "scale_bytes": 1, "beat_bytes": 1,
               "result_bytes": 1, "codebook_entries": 16, "entry_bits": 4}


def _check_status(fields):
    if fields["protocol_version"] != P.PROTOCOL_VERSION:
        raise LinkError(f"STATUS: the board speaks protocol version {fields['protocol_version']}, this driver "
                        f"version {P.PROTOCOL_VERSION}: rebuild the bitstream from this bcq, or use the bcq it was "
                        "built with")
    for name, low in _STATUS_MIN.items():
        if fields[name] < low:
            raise LinkError(f"STATUS: field {name}={fields[name]} is impossible (at least {low}): a damaged reply")
    if fields["codebook_entries"] % 16 or fields["entry_bits"] > 8:
        raise LinkError(f"STATUS: {fields['codebook_entries']} codebook entries of {fields['entry_bits']} bits is "
                        "impossible (a multiple of 16 entries of 4..8 bits): a damaged reply")
    return DeviceInfo(**fields)


class Accelerator:
    """Host side of the board's link (protocol: :mod:`bcq.sw.contract.protocol`).

    Parameters
    ----------
    transport
        An object with ``write(bytes)`` and ``read(n) -> bytes`` (a ``serial.Serial``, or the
        simulated board's UART pins); ``read`` may return fewer bytes than asked, or none.
    timeout : float
        Seconds each request may wait for its reply (beyond ``byte_time`` per byte sent and
        expected); then :class:`LinkError`.
    byte_time : float
        Seconds one byte takes on the wire (10 / baud rate for a UART), added to the deadline
        per byte, so long requests on slow links get the time they need.

    Members
    -------
    info : :class:`DeviceInfo`
        The board's STATUS (read, and checked, on first use).
    layer : :class:`bcq.sw.host.image.LayerImage` or None
        The layer last loaded completely with :meth:`write_layer`.
    """

    def __init__(self, transport, *, timeout=DEFAULT_TIMEOUT, byte_time=0.0):
        for method in ("write", "read"):
            if not callable(getattr(transport, method, None)):
                raise BCQError(f"Accelerator: the transport must have write(bytes) and read(n) methods; "
                               f"{type(transport).__name__} has no {method}()")
        for name, value in (("timeout", timeout), ("byte_time", byte_time)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise BCQError(f"Accelerator: {name} must be a finite number of seconds >= 0, not {value!r}")
        self.transport, self.timeout, self.byte_time = transport, float(timeout), float(byte_time)
        self._info = None
        self.layer = None

    @classmethod
    def open(cls, port, baudrate=115200, timeout=DEFAULT_TIMEOUT):
        """An :class:`Accelerator` on the serial port ``port`` (pyserial)."""
        try:
            import serial
        except ImportError:
            raise BCQError("pyserial is needed for a real board (make install)") from None
        try:
            # A short read time-out: the driver's own deadline decides when a reply is late.
            link = serial.Serial(port, baudrate, timeout=0.05)
        except (serial.SerialException, ValueError) as e:
            raise BCQError(f"{port}: cannot open the serial port ({e})") from None
        return cls(link, timeout=timeout, byte_time=10 / baudrate)

    # -- frames -------------------------------------------------------------------------------

    def _read(self, n, deadline, name):
        """Up to ``n`` bytes: those that arrive before ``deadline`` (a monotonic time), and at
        least one read's worth, so bytes already waiting are never refused."""
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.transport.read(n - len(buf))
            except OSError as e:  # pyserial's SerialException is one
                raise LinkError(f"{name}: reading from the transport failed ({e})") from None
            if chunk is None:
                chunk = b""
            if not isinstance(chunk, (bytes, bytearray)) or len(chunk) > n - len(buf):
                raise LinkError(f"{name}: the transport's read({n - len(buf)}) returned "
                                f"{type(chunk).__name__} of length {len(chunk) if hasattr(chunk, '__len__') else '?'}")
            buf += chunk
            remaining = deadline - time.monotonic()
            if len(buf) >= n or remaining <= 0:
                break
            if not chunk:
                time.sleep(min(0.001, remaining))  # a non-blocking transport: do not spin
        return bytes(buf)

    def _resync(self):
        """After a garbled reply, drop what the transport still holds (pyserial can)."""
        reset = getattr(self.transport, "reset_input_buffer", None)
        if callable(reset):
            try:
                reset()
            except OSError:
                pass

    def _call(self, cmd, payload, reply_bytes):
        """Send one request and return the payload of its reply, which must be ``reply_bytes``
        long. Raises :class:`LinkError` for a late, short, garbled or refused reply."""
        name = P.COMMANDS[cmd]
        frame = P.request(cmd, payload)
        try:
            self.transport.write(frame)
        except OSError as e:
            raise LinkError(f"{name}: writing to the transport failed ({e})") from None
        wait = self.timeout + self.byte_time * (len(frame) + reply_bytes + 6)
        deadline = time.monotonic() + wait
        head = self._read(4, deadline, name)
        if not head:
            raise LinkError(f"{name}: no reply within {wait:.1f} s (is the board connected, programmed with the "
                            "bcq bitstream and at the same baud rate?)")
        if head[0] != P.SYNC_REPLY:
            self._resync()
            raise LinkError(f"{name}: garbled reply: first byte {head[0]:#04x}, not the sync byte "
                            f"{P.SYNC_REPLY:#04x} (wrong baud rate, or not a bcq board?)")
        if len(head) < 4:
            raise LinkError(f"{name}: the reply stopped after {len(head)} of its 4 header bytes ({wait:.1f} s)")
        status, n = head[1], int.from_bytes(head[2:4], "little")
        if status not in P.STATUS_NAMES:
            self._resync()
            raise LinkError(f"{name}: garbled reply: status {status:#04x} is not one the protocol defines")
        want = reply_bytes if status == P.STATUS_OK else 0
        if n != want:
            self._resync()
            raise LinkError(f"{name}: garbled reply: {n} payload bytes where the protocol gives {want}"
                            + (" (a board of another protocol version?)" if cmd == P.CMD_STATUS else ""))
        rest = self._read(n + 2, deadline, name)
        if len(rest) < n + 2:
            raise LinkError(f"{name}: the reply stopped after {4 + len(rest)} of its {6 + n} bytes ({wait:.1f} s)")
        try:
            status, body = P.parse_reply(head + rest)
        except ValueError as e:
            self._resync()
            raise LinkError(f"{name}: damaged reply ({e})") from None
        if status != P.STATUS_OK:
            raise LinkError(f"{name}: the board refused the request: {P.STATUS_NAMES[status]}")
        return body

    # -- commands -----------------------------------------------------------------------------

    def status(self) -> DeviceInfo:
        """Ask the board for its identity (STATUS), check it, and keep it as :attr:`info`."""
        body = self._call(P.CMD_STATUS, b"", P.STATUS_BYTES)
        self._info = _check_status(P.parse_status(body))
        return self._info

    @property
    def info(self) -> DeviceInfo:
        return self._info or self.status()

    def _write_words(self, cmd, words, nbytes):
        per = (P.MAX_PAYLOAD - 2) // nbytes
        for start in range(0, len(words), per):
            if start > 0xFFFF:
                raise BCQError(f"{P.COMMANDS[cmd]}: address {start} does not fit the protocol's 16-bit start field")
            chunk = words[start:start + per]
            try:
                data = b"".join(w.to_bytes(nbytes, "little") for w in chunk)
            except (OverflowError, AttributeError, TypeError):
                raise BCQError(f"{P.COMMANDS[cmd]}: a word at {start}.. is not an integer of {nbytes} bytes") from None
            self._call(cmd, start.to_bytes(2, "little") + data, 0)

    def write_codebooks(self, codebooks: Codebooks):
        """Load the codebook table (must match the board's entry count and width)."""
        if not isinstance(codebooks, Codebooks):
            raise BCQError(f"write_codebooks takes a Codebooks, not {type(codebooks).__name__}")
        cfg, info = codebooks.config, self.info
        if (codebooks.entries.numel(), cfg.entry_bits) != (info.codebook_entries, info.entry_bits):
            raise BCQError(f"the codebooks have {codebooks.entries.numel()} entries of INT{cfg.entry_bits}; the "
                           f"board holds {info.codebook_entries} entries of INT{info.entry_bits}")
        mask = (1 << 8) - 1  # one byte per entry, two's complement
        self._write_words(P.CMD_WRITE_CODEBOOK, [v & mask for v in codebooks.entries.flatten().tolist()], 1)

    def _check_layout(self, layout: EngineLayout, what):
        info = self.info
        have = {"lanes": layout.lanes, "weight_bytes": P.nbytes(layout.weight_width),
                "scale_bytes": P.nbytes(layout.scale_width),
                "beat_bytes": P.nbytes(activation_layout(layout.geometry).size),
                "entry_bits": layout.config.entry_bits,
                "codebook_entries": layout.config.n_codebooks * layout.config.n_entries}
        for field, value in have.items():
            if getattr(info, field) != value:
                raise BCQError(f"{what} is for an engine with {field}={value}; the board reports "
                               f"{field}={getattr(info, field)}" + (f" (write the image with --lanes {info.lanes})"
                                                                     if field == "lanes" else ""))

    def _check_layer(self, layer, what):
        if not isinstance(layer, LayerImage):
            raise BCQError(f"{what} takes a LayerImage (read_image(path).layers[name]), not {type(layer).__name__}")
        if layer.layout is None:
            raise BCQError(f"layer {layer.name}: its engine layout is unknown (load it with read_image)")
        rows, cols = layer.shape
        self._check_layout(layer.layout, f"layer {layer.name}")
        if rows > self.info.max_rows or cols > self.info.max_cols:
            raise BCQError(f"layer {layer.name} ({rows} x {cols}) exceeds the board's "
                           f"{self.info.max_rows} x {self.info.max_cols}")
        lay = layer.layout
        for kind, words, depth in (("weight", layer.weight_words, lay.weight_depth(rows, cols)),
                                   ("scale", layer.scale_words, lay.scale_depth(rows, cols))):
            if len(words) != depth:
                raise BCQError(f"layer {layer.name}: {len(words)} {kind} words; shape {rows} x {cols} needs {depth}")

    def write_layer(self, layer: LayerImage):
        """Load one layer of a weight image (``read_image(...).layers[name]``), checked against
        the board: lanes, word sizes, rows and columns."""
        self._check_layer(layer, "write_layer")
        self.layer = None  # the board holds a mix until both writes are done
        self._write_words(P.CMD_WRITE_WEIGHTS, layer.weight_words, self.info.weight_bytes)
        self._write_words(P.CMD_WRITE_SCALES, layer.scale_words, self.info.scale_bytes)
        self.layer = layer

    def use_layer(self, layer: LayerImage):
        """Use ``layer`` without writing it: the board's memories already hold it (a bitstream
        built with ``bcq build --image IMG --layer NAME`` bakes the layer and the codebooks in).
        Checked against the board as :meth:`write_layer` checks it; the memories cannot be read
        back, so that the build baked this very layer is taken on trust."""
        self._check_layer(layer, "use_layer")
        self.layer = layer

    def gemv_bf16(self, x, *, ts_exp=None):
        """``W x`` of the loaded layer computed on the board BF16 in, BF16 out (GEMV_BF16):
        ``x`` (a 1-D float tensor of the layer's columns) is rounded to BF16 (to nearest even)
        and sent as is; the board encodes it (docs/arithmetic.md section 7: +-Inf reads as the
        largest finite value, NaN as zero) with the tensor scale ``2**ts_exp`` and rounds each
        row's exact result once to BF16 (section 8). Returns a ``torch.bfloat16`` tensor [rows],
        bit for bit :func:`bcq.sw.formats.golden_bf16.gemv_bf16`.

        ``ts_exp`` defaults to :func:`bcq.sw.formats.encoder_int.tensor_scale_exp` of the
        vector (the least that no array's scale exceeds the largest). The layer's tensor scale
        must be a power of two (an image written with ``pow2_tensor_scale``): the board adds its
        exponent and has no multiplier. Raises :class:`BCQError` for misuse, :class:`LinkError`
        for a reply that is not one BF16 value per row.
        """
        if self.layer is None:
            raise BCQError("gemv_bf16: no layer loaded; call write_layer(layer) first")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 1:
            got = f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise BCQError(f"gemv_bf16: x must be a 1-D floating-point tensor, not {got}")
        layer = self.layer
        rows, cols = layer.shape
        if x.shape[0] != cols:
            raise BCQError(f"gemv_bf16: x has {x.shape[0]} scalars; layer {layer.name} has {cols} columns")
        cfg = layer.layout.config
        if ts_exp is not None and (not isinstance(ts_exp, int) or isinstance(ts_exp, bool)
                                   or not TS_EXP_RANGE[0] <= ts_exp <= TS_EXP_RANGE[1]
                                   or (ts_exp and not cfg.tensor_scale)):
            allowed = f"an integer {TS_EXP_RANGE[0]}..{TS_EXP_RANGE[1]}" if cfg.tensor_scale else \
                "0 (the config has no tensor scale)"
            raise BCQError(f"gemv_bf16: ts_exp={ts_exp!r}; allowed: None or {allowed}")
        w_exp = pow2_exponent(layer.weights.tensor_scale, f"gemv_bf16: layer {layer.name}'s tensor scale")
        if self.info.encoder_lanes == 0:
            raise BCQError("gemv_bf16: the board has no activation encoder (STATUS encoder_lanes=0; built without "
                           "one): use gemv()")
        self._check_layout(layer.layout, f"layer {layer.name}")
        bits = float_bits(x.detach().cpu(), "bf16")
        if ts_exp is None:
            ts_exp = tensor_scale_exp(bits, cfg)
        payload = P.gemv_bf16_payload(rows, ts_exp, w_exp, bits.tolist())
        if len(payload) > P.MAX_PAYLOAD:
            raise BCQError(f"gemv_bf16: {cols} scalars do not fit one request (at most "
                           f"{(P.MAX_PAYLOAD - 4) // P.BF16_BYTES})")
        body = self._call(P.CMD_GEMV_BF16, payload, rows * P.BF16_BYTES)
        return bf16_from_bits(torch.tensor(P.parse_bf16_results(body), dtype=torch.int64))

    def gemv_fixed(self, x: BCQTensor, layout: EngineLayout | None = None):
        """Exact accumulators (ints, one per row) of the loaded layer times the encoded vector ``x``.

        ``layout`` defaults to the layer's; a different one is refused. Raises
        :class:`BCQError` for a vector of the wrong length or config, :class:`LinkError` for a
        reply that does not hold one result per row.
        """
        if self.layer is None:
            raise BCQError("gemv: no layer loaded; call write_layer(layer) first")
        if not isinstance(x, BCQTensor) or x.indices.dim() != 1:
            raise BCQError(f"gemv: x must be a 1-D BCQTensor (encode(vector, codebooks)), not "
                           f"{type(x).__name__}{' of shape ' + str(x.shape) if isinstance(x, BCQTensor) else ''}")
        layer = self.layer
        layout = layout if layout is not None else layer.layout
        if layout != layer.layout:
            raise BCQError(f"gemv: the layout given is not the one layer {layer.name} was written for")
        if x.config != layout.config:
            raise BCQError(f"gemv: x was encoded for {x.config.describe()}; the layer is {layout.config.describe()}")
        rows, cols = layer.shape
        if x.shape[0] != cols:
            raise BCQError(f"gemv: x has {x.shape[0]} scalars; layer {layer.name} has {cols} columns")
        self._check_layout(layout, f"layer {layer.name}")
        beats = activation_beats(x, layout.geometry)
        payload = rows.to_bytes(2, "little") + b"".join(b.to_bytes(self.info.beat_bytes, "little") for b in beats)
        if len(payload) > P.MAX_PAYLOAD:
            raise BCQError(f"gemv: {len(beats)} beats do not fit one request (at most "
                           f"{(P.MAX_PAYLOAD - 2) // self.info.beat_bytes})")
        n = self.info.result_bytes
        body = self._call(P.CMD_GEMV, payload, rows * n)
        return [int.from_bytes(body[i:i + n], "little", signed=True) for i in range(0, len(body), n)]

    def gemv(self, x, image: Image | None = None):
        """y = W x in float64 for a 1-D float vector ``x``, encoded here with the loaded layer's
        codebooks (``image``, if given, must hold the same codebooks)."""
        if self.layer is None:
            raise BCQError("gemv: no layer loaded; call write_layer(layer) first")
        codebooks = self.layer.weights.codebooks
        if image is not None and (not isinstance(image, Image) or image.codebooks != codebooks):
            raise BCQError("gemv: image must be the Image the loaded layer came from")
        if not isinstance(x, torch.Tensor) or x.dim() != 1:
            got = f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise BCQError(f"gemv: x must be a 1-D float tensor, not {got}")
        q = encode(x, codebooks)
        acc = torch.tensor(self.gemv_fixed(q), dtype=torch.int64)
        return to_value(acc, self.layer.weights, q)
