"""Host link protocol of the board top (UART), defined once: the gateware (``bcq.hw.host_link``)
reads these constants, the host driver (``bcq.sw.host.driver``) builds and parses frames with these
functions.

Request:  0xA5, cmd, len (2 bytes LE), payload (len bytes), CRC-16 (2 bytes LE) of cmd..payload
Reply:    0x5A, status, len (2 bytes LE), payload, CRC-16 (2 bytes LE) of status..payload
CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor):
``amaranth.lib.crc.catalog.CRC16_CCITT_FALSE``, computed in software with ``.compute()`` here
and in hardware by the same parameters' ``.create()`` processor.

A request's payload is buffered whole and checked before it acts: a bad CRC, an unknown command
or a bad length changes nothing and gets an error reply. A frame that stops arriving is dropped
after ``IDLE_TIMEOUT_BYTES`` byte times of silence, so the link never hangs.

Commands (multi-byte integers little-endian; word sizes are the engine's widths rounded up to
bytes and reported by STATUS):
- STATUS: no payload. Reply: the fields of :data:`STATUS_LAYOUT` (build id, lanes, max_rows,
  max_cols, weight/scale word bytes, activation beat bytes, result bytes, codebook entries,
  entry bits, protocol version), packed little-endian.
- WRITE_CODEBOOK: start entry (2), then one byte per entry (two's complement). Reply: empty.
- WRITE_WEIGHTS / WRITE_SCALES: start address (2), then whole words. Reply: empty.
- GEMV: rows (2), then the activation beats. Reply: rows x result bytes, row order.
"""

from amaranth.lib import data
from amaranth.lib.crc import catalog

__all__ = ["SYNC_REQUEST", "SYNC_REPLY", "PROTOCOL_VERSION", "MAX_PAYLOAD", "IDLE_TIMEOUT_BYTES", "COMMANDS",
           "STATUS_NAMES", "STATUS_LAYOUT", "STATUS_BYTES", "CRC", "crc16", "request", "parse_reply", "status_payload",
           "parse_status", "nbytes"]

SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
PROTOCOL_VERSION = 1
MAX_PAYLOAD = 2048
IDLE_TIMEOUT_BYTES = 64

CMD_STATUS = 0x01
CMD_WRITE_CODEBOOK = 0x02
CMD_WRITE_WEIGHTS = 0x03
CMD_WRITE_SCALES = 0x04
CMD_GEMV = 0x05
COMMANDS = {CMD_STATUS: "STATUS", CMD_WRITE_CODEBOOK: "WRITE_CODEBOOK", CMD_WRITE_WEIGHTS: "WRITE_WEIGHTS",
            CMD_WRITE_SCALES: "WRITE_SCALES", CMD_GEMV: "GEMV"}

STATUS_OK = 0
STATUS_BAD_CRC = 1
STATUS_UNKNOWN_COMMAND = 2
STATUS_BAD_LENGTH = 3
STATUS_NAMES = {STATUS_OK: "ok", STATUS_BAD_CRC: "bad CRC", STATUS_UNKNOWN_COMMAND: "unknown command",
                STATUS_BAD_LENGTH: "bad length"}


# The reply to STATUS: the board's identity and word sizes, little-endian in this field order.
STATUS_LAYOUT = data.StructLayout({
    "build_id": 32, "lanes": 8, "max_rows": 16, "max_cols": 16,
    "weight_bytes": 8, "scale_bytes": 8, "beat_bytes": 8, "result_bytes": 8,
    "codebook_entries": 16, "entry_bits": 8, "protocol_version": 8,
})
STATUS_BYTES = STATUS_LAYOUT.size // 8

# CRC-16/CCITT-FALSE over bytes: `CRC.compute(data)` here, `CRC.create()` in the gateware.
CRC = catalog.CRC16_CCITT_FALSE(data_width=8)


def crc16(payload):
    return CRC.compute(payload)


def status_payload(**fields):
    """The STATUS reply payload (bytes) carrying ``fields`` (every field of STATUS_LAYOUT)."""
    return STATUS_LAYOUT.const(fields).as_bits().to_bytes(STATUS_BYTES, "little")


def parse_status(payload):
    """The STATUS reply payload as a dict of its fields; ValueError for a payload of the wrong size."""
    if len(payload) != STATUS_BYTES:
        raise ValueError(f"STATUS reply of {len(payload)} bytes; the protocol's is {STATUS_BYTES}")
    value = STATUS_LAYOUT.from_bits(int.from_bytes(payload, "little"))
    return {name: int(getattr(value, name)) for name, _ in STATUS_LAYOUT}


def request(cmd, payload=b""):
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = bytes([cmd]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC_REQUEST]) + body + crc16(body).to_bytes(2, "little")


def parse_reply(frame):
    """(status, payload) of a whole reply frame; ValueError on damage."""
    if len(frame) < 6 or frame[0] != SYNC_REPLY:
        raise ValueError("reply does not start with the sync byte")
    n = int.from_bytes(frame[2:4], "little")
    if len(frame) != 6 + n:
        raise ValueError(f"reply of {len(frame)} bytes, header says {6 + n}")
    if crc16(frame[1:4 + n]) != int.from_bytes(frame[4 + n:6 + n], "little"):
        raise ValueError("reply CRC mismatch")
    return frame[1], frame[4:4 + n]


def nbytes(bits):
    return (bits + 7) // 8
