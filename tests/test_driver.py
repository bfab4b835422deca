"""The host driver (bcq.sw.host.driver.Accelerator) against scripted boards: every reply is
checked, requests are checked against the board's identity, each request has its own deadline,
and misuse is a named error. (The driver against the real top on Verilator: test_board_cocotb.)"""
import time

from helpers import Board, exactly, reply
import pytest
import torch

from bcq.hw.gemv import GEMV
from bcq.hw.host_link import status_payload
from bcq.sw.contract import protocol as P
from bcq.sw.contract.beats import activation_beats
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.encoder_int import float_bits
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden import dot_fixed, to_value
from bcq.sw.formats.golden_bf16 import gemv_bf16, pow2_exponent
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.driver import Accelerator, LinkError
from bcq.sw.host.image import read_image, write_image

ROWS, COLS = 6, 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cb = default_codebooks()
    layout = EngineLayout(cb.config, 2, 1)
    path = tmp_path_factory.mktemp("img")
    write_image(path, {"fc": torch.randn(ROWS, COLS, generator=torch.Generator().manual_seed(0))}, cb, layout)
    img = read_image(path, layout)
    return img, img.layers["fc"]


def status_of(layout, **changes):
    """The STATUS payload the gateware reports for an engine of ``layout`` (from bcq.hw, so the
    driver is checked against what the board really sends), with ``changes``."""
    fields = P.parse_status(status_payload(GEMV(layout, max_rows=8, max_cols=COLS), build_id=0x5EED))
    fields.update(changes)
    return P.status_payload(**fields)


def loaded(img, layer, extra_replies=(), **status_changes):
    """An accelerator whose board answered STATUS and took the codebooks and the layer."""
    n_writes = 0
    for words, nbytes in ((img.codebooks.entries.numel(), 1),
                          (len(layer.weight_words), P.nbytes(img.layout.weight_width)),
                          (len(layer.scale_words), P.nbytes(img.layout.scale_width))):
        n_writes += -(-words // ((P.MAX_PAYLOAD - 2) // nbytes))
    board = Board(reply(status_of(img.layout, **status_changes)), *[reply()] * n_writes, *extra_replies)
    acc = Accelerator(board, timeout=1.0)
    acc.write_codebooks(img.codebooks)
    acc.write_layer(layer)
    return acc, board


def test_a_good_board_round_trip(setup, seed):
    img, layer = setup
    x = encode(torch.randn(COLS, generator=torch.Generator().manual_seed(seed)), img.codebooks)
    want = dot_fixed(layer.weights, x).tolist()
    n = P.nbytes(GEMV(img.layout, max_rows=8, max_cols=COLS).acc_bits)
    acc, board = loaded(img, layer, [reply(b"".join(v.to_bytes(n, "little", signed=True) for v in want))])
    assert acc.info.lanes == img.layout.lanes and acc.info.build_id == 0x5EED
    assert acc.gemv_fixed(x) == want
    # What was sent: the layer's words in order, and the activation beats of x.
    sent = [P.parse_reply(bytes([P.SYNC_REPLY]) + r[1:]) for r in board.requests]  # same framing, other sync
    words = b"".join(body[2:] for cmd, body in sent if cmd == P.CMD_WRITE_WEIGHTS)
    nw = acc.info.weight_bytes
    assert [int.from_bytes(words[i:i + nw], "little") for i in range(0, len(words), nw)] == layer.weight_words
    gemv_body = next(body for cmd, body in sent if cmd == P.CMD_GEMV)
    nb = acc.info.beat_bytes
    assert int.from_bytes(gemv_body[:2], "little") == ROWS
    assert [int.from_bytes(gemv_body[i:i + nb], "little") for i in range(2, len(gemv_body), nb)] == \
        activation_beats(x, img.layout.geometry)


def test_gemv_in_float_uses_the_loaded_layer(setup, seed):
    img, layer = setup
    v = torch.randn(COLS, generator=torch.Generator().manual_seed(seed))
    x = encode(v, img.codebooks)
    want = dot_fixed(layer.weights, x)
    n = P.nbytes(GEMV(img.layout, max_rows=8, max_cols=COLS).acc_bits)
    acc, _ = loaded(img, layer, [reply(b"".join(int(a).to_bytes(n, "little", signed=True) for a in want))])
    assert torch.equal(acc.gemv(v, img), to_value(want, layer.weights, x))


# -- STATUS ------------------------------------------------------------------------------------

def test_empty_status_reply_is_refused():
    acc = Accelerator(Board(reply(b"")), timeout=1.0)
    with pytest.raises(LinkError, match=exactly(
            f"STATUS: garbled reply: 0 payload bytes where the protocol gives {P.STATUS_BYTES} "
            "(a board of another protocol version?)")):
        acc.status()


def test_other_protocol_version_is_refused(setup):
    img, _ = setup
    other = P.PROTOCOL_VERSION + 1
    acc = Accelerator(Board(reply(status_of(img.layout, protocol_version=other))), timeout=1.0)
    with pytest.raises(LinkError, match=exactly(
            f"STATUS: the board speaks protocol version {other}, this driver version {P.PROTOCOL_VERSION}: "
            "rebuild the bitstream from this bcq, or use the bcq it was built with")):
        acc.status()


@pytest.mark.parametrize("field,value,message", [
    ("lanes", 0, "field lanes=0 is impossible (at least 1): a damaged reply"),
    ("result_bytes", 0, "field result_bytes=0 is impossible (at least 1): a damaged reply"),
    ("max_cols", 0, "field max_cols=0 is impossible (at least 1): a damaged reply"),
    ("codebook_entries", 17, "17 codebook entries of 6 bits is impossible (a multiple of 16 entries of 4..8 bits): "
                             "a damaged reply"),
])
def test_impossible_status_fields_are_refused(setup, field, value, message):
    img, _ = setup
    acc = Accelerator(Board(reply(status_of(img.layout, **{field: value}))), timeout=1.0)
    message = message.replace("6 bits", f"{img.config.entry_bits} bits")
    with pytest.raises(LinkError, match=exactly(f"STATUS: {message}")):
        acc.status()


# -- requests against the board's identity ---------------------------------------------------

def test_lane_count_must_match_the_board(setup):
    img, layer = setup
    board_lanes = img.layout.lanes + 2
    acc = Accelerator(Board(reply(status_of(img.layout, lanes=board_lanes))), timeout=1.0)
    with pytest.raises(BCQError, match=exactly(
            f"layer fc is for an engine with lanes={img.layout.lanes}; the board reports lanes={board_lanes} "
            f"(write the image with --lanes {board_lanes})")):
        acc.write_layer(layer)


def test_word_sizes_must_match_the_board(setup):
    img, layer = setup
    wb = P.nbytes(img.layout.weight_width)
    acc = Accelerator(Board(reply(status_of(img.layout, weight_bytes=wb + 1))), timeout=1.0)
    with pytest.raises(BCQError, match=exactly(
            f"layer fc is for an engine with weight_bytes={wb}; the board reports weight_bytes={wb + 1}")):
        acc.write_layer(layer)


def test_codebook_size_must_match_the_board(setup):
    img, _ = setup
    n = img.codebooks.entries.numel()
    acc = Accelerator(Board(reply(status_of(img.layout, codebook_entries=n * 2))), timeout=1.0)
    bits = img.config.entry_bits
    with pytest.raises(BCQError, match=exactly(
            f"the codebooks have {n} entries of INT{bits}; the board holds {2 * n} entries of INT{bits}")):
        acc.write_codebooks(img.codebooks)


def test_layer_larger_than_the_board_is_refused(setup):
    img, layer = setup
    acc = Accelerator(Board(reply(status_of(img.layout, max_rows=ROWS - 1))), timeout=1.0)
    with pytest.raises(BCQError, match=exactly(f"layer fc ({ROWS} x {COLS}) exceeds the board's {ROWS - 1} x {COLS}")):
        acc.write_layer(layer)


def test_wrong_number_of_results_is_refused(setup):
    img, layer = setup
    n = P.nbytes(GEMV(img.layout, max_rows=8, max_cols=COLS).acc_bits)
    acc, _ = loaded(img, layer, [reply(bytes(n * (ROWS - 1)))])
    x = encode(torch.randn(COLS), img.codebooks)
    with pytest.raises(LinkError, match=exactly(
            f"GEMV: garbled reply: {n * (ROWS - 1)} payload bytes where the protocol gives {n * ROWS}")):
        acc.gemv_fixed(x)


def test_wrong_vector_length_is_refused(setup):
    img, layer = setup
    acc, board = loaded(img, layer)
    sent = len(board.requests)
    x = encode(torch.randn(COLS + img.config.array_len), img.codebooks)
    with pytest.raises(BCQError, match=exactly(f"gemv: x has {COLS + img.config.array_len} scalars; layer fc has "
                                               f"{COLS} columns")):
        acc.gemv_fixed(x)
    assert len(board.requests) == sent  # refused before a byte was sent


# -- silent, slow and garbled boards -----------------------------------------------------------

def test_silent_board_times_out_on_the_drivers_own_clock():
    acc = Accelerator(Board(), timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=exactly(
            "STATUS: no reply within 0.3 s (is the board connected, programmed with the bcq bitstream and at the "
            "same baud rate?)")):
        acc.status()
    assert time.monotonic() - t0 < 2


def test_a_reply_that_stops_is_not_waited_for_forever(setup):
    img, _ = setup
    frame = reply(status_of(img.layout))
    acc = Accelerator(Board(frame[:9], chunk=1), timeout=0.3)  # one byte per read, then nothing
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=exactly(
            f"STATUS: the reply stopped after 9 of its {len(frame)} bytes (0.3 s)")):
        acc.status()
    assert time.monotonic() - t0 < 2


class Trickle:
    """A transport that answers every read with one byte, slowly, forever: a STATUS header,
    then zeros."""

    def __init__(self):
        self.stream = bytearray(reply(bytes(P.STATUS_BYTES))[:4])

    def write(self, data):
        pass

    def read(self, n):
        time.sleep(0.02)
        return bytes([self.stream.pop(0) if self.stream else 0])


def test_a_trickle_that_never_ends_a_frame_hits_the_deadline():
    acc = Accelerator(Trickle(), timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=r"^STATUS: the reply stopped after \d+ of its "
                                        rf"{P.STATUS_BYTES + 6} bytes \(0\.3 s\)$"):
        acc.status()
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("how,message", [
    ("sync", "STATUS: garbled reply: first byte 0x00, not the sync byte 0x5a (wrong baud rate, or not a bcq board?)"),
    ("crc", "STATUS: damaged reply (reply CRC mismatch)"),
    ("status", "STATUS: garbled reply: status 0x77 is not one the protocol defines"),
    ("refused", "STATUS: the board refused the request: bad CRC"),
    ("error with payload", f"STATUS: garbled reply: {P.STATUS_BYTES} payload bytes where the protocol gives 0 "
                           "(a board of another protocol version?)"),
])
def test_garbled_replies_are_named(setup, how, message):
    img, _ = setup
    frame = bytearray(reply(status_of(img.layout)))
    if how == "sync":
        frame[0] = 0
    elif how == "crc":
        frame[-1] ^= 1
    elif how == "status":
        frame[1] = 0x77
    elif how == "refused":
        frame = bytearray(reply(b"", P.STATUS_BAD_CRC))
    else:
        frame = bytearray(reply(status_of(img.layout), P.STATUS_BAD_LENGTH))
    with pytest.raises(LinkError, match=exactly(message)):
        Accelerator(Board(bytes(frame)), timeout=0.5).status()


# -- misuse ------------------------------------------------------------------------------------

def test_misuse_is_a_named_error(setup):
    img, layer = setup
    with pytest.raises(BCQError, match=exactly(
            "Accelerator: the transport must have write(bytes) and read(n) methods; str has no write()")):
        Accelerator("/dev/ttyUSB0")
    with pytest.raises(BCQError, match=exactly(
            "Accelerator: timeout must be a finite number of seconds >= 0, not -1")):
        Accelerator(Board(), timeout=-1)
    acc = Accelerator(Board(reply(status_of(img.layout))), timeout=1.0)
    with pytest.raises(BCQError, match=exactly("gemv: no layer loaded; call write_layer(layer) first")):
        acc.gemv_fixed(encode(torch.randn(COLS), img.codebooks))
    with pytest.raises(BCQError, match=exactly("gemv: no layer loaded; call write_layer(layer) first")):
        acc.gemv(torch.randn(COLS))
    with pytest.raises(BCQError, match=exactly(
            "write_layer takes a LayerImage (read_image(path).layers[name]), not str")):
        acc.write_layer("fc")
    with pytest.raises(BCQError, match=exactly("write_codebooks takes a Codebooks, not NoneType")):
        acc.write_codebooks(None)
    acc, _ = loaded(img, layer)
    with pytest.raises(BCQError, match=exactly(
            "gemv: x must be a 1-D BCQTensor (encode(vector, codebooks)), not Tensor")):
        acc.gemv_fixed(torch.randn(COLS))
    with pytest.raises(BCQError, match=exactly("gemv: x must be a 1-D float tensor, not a tensor of shape (2, 128)")):
        acc.gemv(torch.randn(2, COLS))


# -- BF16 in, BF16 out (GEMV_BF16) -------------------------------------------------------------

@pytest.fixture(scope="module")
def setup_pow2(tmp_path_factory):
    """An image whose layer has a power-of-two tensor scale (what GEMV_BF16 needs)."""
    cb = default_codebooks()
    layout = EngineLayout(cb.config, 2, 1)
    path = tmp_path_factory.mktemp("img2")
    write_image(path, {"fc": torch.randn(ROWS, COLS, generator=torch.Generator().manual_seed(0))}, cb, layout,
                pow2_tensor_scale=True)
    img = read_image(path, layout)
    return img, img.layers["fc"]


def test_gemv_bf16_round_trip(setup_pow2, seed):
    img, layer = setup_pow2
    x = torch.randn(COLS, generator=torch.Generator().manual_seed(seed)) * 3
    want, ts = gemv_bf16(layer.weights, x)
    body = b"".join((int(v) & 0xFFFF).to_bytes(2, "little") for v in want.view(torch.int16).tolist())
    acc, board = loaded(img, layer, [reply(body)], encoder_lanes=1)
    got = acc.gemv_bf16(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got.view(torch.int16), want.view(torch.int16))
    # What was sent: rows, the exponents word (ts_exp, w_exp), the BF16 patterns of x.
    cmd, sent = P.parse_reply(bytes([P.SYNC_REPLY]) + board.requests[-1][1:])
    assert cmd == P.CMD_GEMV_BF16
    w_exp = pow2_exponent(layer.weights.tensor_scale)
    assert sent[:4] == ROWS.to_bytes(2, "little") + bytes([ts & 0xFF, w_exp & 0xFF])
    assert [int.from_bytes(sent[i:i + 2], "little") for i in range(4, len(sent), 2)] == float_bits(x).tolist()
    # A bfloat16 vector goes as it is; ts_exp given by the caller is sent.
    xb = x.to(torch.bfloat16)
    acc2, board2 = loaded(img, layer, [reply(body)], encoder_lanes=1)
    assert torch.equal(acc2.gemv_bf16(xb, ts_exp=ts).view(torch.int16), want.view(torch.int16))
    assert board2.requests[-1] == board.requests[-1]


def test_gemv_bf16_misuse_is_refused_before_a_byte_is_sent(setup, setup_pow2):
    img, layer = setup_pow2
    acc, board = loaded(img, layer, encoder_lanes=1)
    sent = len(board.requests)
    x = torch.randn(COLS)
    for call, message in [
        (lambda: acc.gemv_bf16(x[:-1]), f"gemv_bf16: x has {COLS - 1} scalars; layer fc has {COLS} columns"),
        (lambda: acc.gemv_bf16(x.reshape(2, -1)),
         f"gemv_bf16: x must be a 1-D floating-point tensor, not a torch.float32 tensor of shape (2, {COLS // 2})"),
        (lambda: acc.gemv_bf16(torch.zeros(COLS, dtype=torch.int32)),
         f"gemv_bf16: x must be a 1-D floating-point tensor, not a torch.int32 tensor of shape ({COLS},)"),
        (lambda: acc.gemv_bf16([0.0] * COLS), "gemv_bf16: x must be a 1-D floating-point tensor, not list"),
        (lambda: acc.gemv_bf16(x, ts_exp=128), "gemv_bf16: ts_exp=128; allowed: None or an integer -128..127"),
        (lambda: acc.gemv_bf16(x, ts_exp=1.0), "gemv_bf16: ts_exp=1.0; allowed: None or an integer -128..127"),
    ]:
        with pytest.raises(BCQError, match=exactly(message)):
            call()
    assert len(board.requests) == sent
    fp32_img, fp32_layer = setup                    # an FP32 tensor scale: no BF16 output
    acc, board = loaded(fp32_img, fp32_layer, encoder_lanes=1)
    ts = fp32_layer.weights.tensor_scale
    with pytest.raises(BCQError, match=exactly(
            f"gemv_bf16: layer fc's tensor scale {ts!r} is not a power of two 2**e with e in -128..127: the board's "
            "BF16 output adds the scale's exponent and has no multiplier (write the image with "
            "pow2_tensor_scale=True, bcq weights --pow2-tensor-scale)")):
        acc.gemv_bf16(x)
    acc, board = loaded(img, layer)                 # a board without the encoder
    with pytest.raises(BCQError, match=exactly(
            "gemv_bf16: the board has no activation encoder (STATUS encoder_lanes=0; built without one): use gemv()")):
        acc.gemv_bf16(x)
    with pytest.raises(BCQError, match=exactly("gemv_bf16: no layer loaded; call write_layer(layer) first")):
        Accelerator(Board(), timeout=1.0).gemv_bf16(x)


def test_gemv_bf16_wrong_number_of_results_is_refused(setup_pow2):
    img, layer = setup_pow2
    acc, _ = loaded(img, layer, [reply(bytes(2 * ROWS + 2))], encoder_lanes=1)
    with pytest.raises(LinkError, match=exactly(
            f"GEMV_BF16: garbled reply: {2 * ROWS + 2} payload bytes where the protocol gives {2 * ROWS}")):
        acc.gemv_bf16(torch.randn(COLS))


def test_use_layer_writes_nothing_and_checks_the_layer(setup_pow2):
    img, layer = setup_pow2
    board = Board(reply(status_of(img.layout)))
    acc = Accelerator(board, timeout=1.0)
    acc.use_layer(layer)
    assert acc.layer is layer and [r[1] for r in board.requests] == [P.CMD_STATUS]
    acc = Accelerator(Board(reply(status_of(img.layout, max_rows=ROWS - 1))), timeout=1.0)
    with pytest.raises(BCQError, match=exactly(f"layer fc ({ROWS} x {COLS}) exceeds the board's {ROWS - 1} x {COLS}")):
        acc.use_layer(layer)
    assert acc.layer is None
    with pytest.raises(BCQError, match=exactly("use_layer takes a LayerImage (read_image(path).layers[name]), not str")):
        acc.use_layer("fc")
