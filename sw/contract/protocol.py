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
- GEMV_BF16 (only on a board with the activation encoder: STATUS ``encoder_lanes`` > 0): rows (2),
  then 2-byte words: first the exponents (``ts_exp``, then ``w_exp``: one signed byte each), then
  the activation vector's BF16 patterns, one word each (:func:`gemv_bf16_payload`). The board
  encodes the vector on chip (tensor scale ``2**ts_exp``, docs/arithmetic.md section 7: +-Inf reads
  as the largest finite value, NaN as zero; no error), runs the GEMV and rounds each row's result
  ``acc * 2**(out_exp + ts_exp + w_exp)`` once to BF16 (section 8; ``2**w_exp`` is the weight's
  tensor scale). Reply: rows x 2 bytes, each row's BF16 pattern, row order
  (:func:`parse_bf16_results`). Bad length: rows outside 1..max_rows, a vector that is not a
  positive whole number of block arrays (LA scalars), longer than max_cols, or not whole words.
  The board cannot know the loaded layer's columns: the driver checks that the vector has them.
"""

from amaranth.lib import data
from amaranth.lib.crc import catalog

__all__ = ["SYNC_REQUEST", "SYNC_REPLY", "PROTOCOL_VERSION", "MAX_PAYLOAD", "IDLE_TIMEOUT_BYTES", "COMMANDS",
           "STATUS_NAMES", "STATUS_LAYOUT", "STATUS_BYTES", "CRC", "crc16", "request", "parse_reply", "status_payload",
           "parse_status", "nbytes", "BF16_BYTES", "gemv_bf16_payload", "parse_bf16_results"]

SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
PROTOCOL_VERSION = 2   # 2: GEMV_BF16 and STATUS encoder_lanes
MAX_PAYLOAD = 2048
IDLE_TIMEOUT_BYTES = 64

CMD_STATUS = 0x01
CMD_WRITE_CODEBOOK = 0x02
CMD_WRITE_WEIGHTS = 0x03
CMD_WRITE_SCALES = 0x04
CMD_GEMV = 0x05
CMD_GEMV_BF16 = 0x06
COMMANDS = {CMD_STATUS: "STATUS", CMD_WRITE_CODEBOOK: "WRITE_CODEBOOK", CMD_WRITE_WEIGHTS: "WRITE_WEIGHTS",
            CMD_WRITE_SCALES: "WRITE_SCALES", CMD_GEMV: "GEMV", CMD_GEMV_BF16: "GEMV_BF16"}
BF16_BYTES = 2   # GEMV_BF16's words: the exponents word, then one BF16 pattern each

STATUS_OK = 0
STATUS_BAD_CRC = 1
STATUS_UNKNOWN_COMMAND = 2
STATUS_BAD_LENGTH = 3
STATUS_NAMES = {STATUS_OK: "ok", STATUS_BAD_CRC: "bad CRC", STATUS_UNKNOWN_COMMAND: "unknown command",
                STATUS_BAD_LENGTH: "bad length"}


# The reply to STATUS: the board's identity and word sizes, little-endian in this field order.
# encoder_lanes: BF16 scalars per cycle of the on-chip activation encoder, 0 without one (then
# GEMV_BF16 is an unknown command).
STATUS_LAYOUT = data.StructLayout({
    "build_id": 32, "lanes": 8, "max_rows": 16, "max_cols": 16,
    "weight_bytes": 8, "scale_bytes": 8, "beat_bytes": 8, "result_bytes": 8,
    "codebook_entries": 16, "entry_bits": 8, "encoder_lanes": 8, "protocol_version": 8,
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


def gemv_bf16_payload(rows, ts_exp, w_exp, bits):
    """The GEMV_BF16 request payload: ``rows``, the exponents word (``ts_exp``, ``w_exp``: signed
    bytes) and the BF16 patterns ``bits`` (ints 0..65535), little-endian."""
    for name, e in (("ts_exp", ts_exp), ("w_exp", w_exp)):
        if not -128 <= e <= 127:
            raise ValueError(f"{name}={e} does not fit a signed byte (-128..127)")
    return (rows.to_bytes(2, "little") + bytes([ts_exp & 0xFF, w_exp & 0xFF])
            + b"".join(int(b).to_bytes(BF16_BYTES, "little") for b in bits))


def parse_bf16_results(body):
    """The BF16 patterns (ints) of a GEMV_BF16 reply payload, row order."""
    return [int.from_bytes(body[i:i + BF16_BYTES], "little") for i in range(0, len(body) - 1, BF16_BYTES)]
