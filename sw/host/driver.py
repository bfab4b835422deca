"""Host driver of the board's UART link (protocol: ``bcq.sw.contract.protocol``).

``Accelerator(transport)`` talks to a board (``Accelerator.open("/dev/ttyUSB0")``, pyserial) or to
the simulated board top (``sim/tb_board.py`` passes the same bytes through the UART pins on
Verilator). A transport has ``write(bytes)`` and ``read(n) -> bytes``.
"""

from dataclasses import make_dataclass

import torch

from bcq.sw.contract import protocol as P
from bcq.sw.contract.beats import activation_beats
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden import to_value
from bcq.sw.formats.lobcq import encode

__all__ = ["Accelerator", "LinkError", "DeviceInfo"]


class LinkError(BCQError):
    """The device answered with an error status, or the reply was damaged or missing."""


# What STATUS reports: one attribute per field of the protocol's STATUS_LAYOUT.
DeviceInfo = make_dataclass("DeviceInfo", [(name, int) for name, _ in P.STATUS_LAYOUT], frozen=True)


class Accelerator:
    """Host side of the board's link (protocol: :mod:`bcq.sw.contract.protocol`).

    Parameters
    ----------
    transport
        An object with ``write(bytes)`` and ``read(n) -> bytes`` (a ``serial.Serial``, or the
        simulated board's UART pins); ``read`` returns fewer bytes on a time-out.

    Members
    -------
    info : :class:`DeviceInfo`
        The board's STATUS (read on first use).
    layer : :class:`bcq.sw.host.image.LayerImage`
        The layer last loaded with :meth:`write_layer`.
    """

    def __init__(self, transport):
        self.transport = transport
        self._info = None

    @classmethod
    def open(cls, port, baudrate=115200, timeout=2.0):
        try:
            import serial
        except ImportError:
            raise BCQError("pyserial is needed for a real board (make install)") from None
        try:
            return cls(serial.Serial(port, baudrate, timeout=timeout))
        except serial.SerialException as e:
            raise BCQError(f"{port}: cannot open the serial port ({e})") from None

    def _call(self, cmd, payload=b""):
        self.transport.write(P.request(cmd, payload))
        head = self.transport.read(4)
        if len(head) < 4:
            raise LinkError(f"{P.COMMANDS.get(cmd, cmd)}: no reply from the device")
        n = int.from_bytes(head[2:4], "little")
        rest = self.transport.read(n + 2)
        try:
            status, body = P.parse_reply(bytes(head) + bytes(rest))
        except ValueError as e:
            raise LinkError(f"{P.COMMANDS.get(cmd, cmd)}: damaged reply ({e})") from None
        if status != P.STATUS_OK:
            raise LinkError(f"{P.COMMANDS.get(cmd, cmd)}: device says {P.STATUS_NAMES.get(status, status)}")
        return body

    def status(self) -> DeviceInfo:
        b = self._call(P.CMD_STATUS)
        try:
            self._info = DeviceInfo(**P.parse_status(b))
        except ValueError as e:
            raise LinkError(f"STATUS: {e}") from None
        return self._info

    @property
    def info(self):
        return self._info or self.status()

    def _write_words(self, cmd, words, nbytes):
        per = (P.MAX_PAYLOAD - 2) // nbytes
        for start in range(0, len(words), per):
            chunk = words[start:start + per]
            self._call(cmd, start.to_bytes(2, "little") + b"".join(w.to_bytes(nbytes, "little") for w in chunk))

    def write_codebooks(self, codebooks):
        mask = (1 << 8) - 1
        self._write_words(P.CMD_WRITE_CODEBOOK, [v & mask for v in codebooks.entries.flatten().tolist()], 1)

    def write_layer(self, layer):
        """Load one layer of a weight image (``bcq.sw.host.image.LayerImage``)."""
        rows, cols = layer.shape
        if rows > self.info.max_rows or cols > self.info.max_cols:
            raise BCQError(f"layer {layer.name} ({rows} x {cols}) exceeds the device's "
                           f"{self.info.max_rows} x {self.info.max_cols}")
        self._write_words(P.CMD_WRITE_WEIGHTS, layer.weight_words, self.info.weight_bytes)
        self._write_words(P.CMD_WRITE_SCALES, layer.scale_words, self.info.scale_bytes)
        self.layer = layer

    def gemv_fixed(self, x, layout):
        """Exact accumulators (ints) of the loaded layer times the encoded vector ``x``."""
        rows = self.layer.shape[0]
        beats = activation_beats(x, layout.geometry)
        body = self._call(P.CMD_GEMV, rows.to_bytes(2, "little")
                          + b"".join(b.to_bytes(self.info.beat_bytes, "little") for b in beats))
        n = self.info.result_bytes
        return [int.from_bytes(body[i:i + n], "little", signed=True) for i in range(0, len(body), n)]

    def gemv(self, x, image):
        """y = W x in float64 for a float vector ``x`` (encoded here with the image's codebooks)."""
        q = encode(x, image.codebooks)
        acc = torch.tensor(self.gemv_fixed(q, image.layout))
        return to_value(acc, self.layer.weights, q)
