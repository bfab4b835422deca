"""The accelerator's host protocol at byte level (Amaranth simulator): every command (GEMV_BF16
included), and every framing error gets its error reply without side effects."""
from amaranth.sim import Simulator
import pytest
import torch

from bcq.hw.host_link import Accelerator, status_payload
from bcq.sw.contract import protocol as P
from bcq.sw.contract.beats import activation_beats
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.encoder_int import float_bits, tensor_scale_exp
from bcq.sw.formats.golden import dot_fixed
from bcq.sw.formats.golden_bf16 import gemv_bf16_bits, pow2_exponent
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.image import read_image, write_image


def exchange(dut, requests, n_replies=None):
    """Send requests (bytes; an int is that many idle cycles) in order; return the first
    ``n_replies`` reply frames (default: one per request)."""
    n_replies = sum(isinstance(r, bytes) for r in requests) if n_replies is None else n_replies
    replies = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tx(ctx):
        for req in requests:
            if isinstance(req, int):
                await ctx.tick().repeat(req)
                continue
            for b in req:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, b)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def rx(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(n_replies):
            frame = bytearray()
            while True:
                b, = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
                frame.append(b)
                if len(frame) >= 4 and len(frame) == 6 + int.from_bytes(frame[2:4], "little"):
                    break
            replies.append(bytes(frame))

    sim.add_testbench(tx)
    sim.add_testbench(rx)
    sim.run()
    return replies


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cb = default_codebooks()
    layout = EngineLayout(cb.config, 2, 1)
    path = tmp_path_factory.mktemp("img")
    write_image(path, {"fc": torch.randn(5, 128, generator=torch.Generator().manual_seed(0))}, cb, layout)
    return cb, layout, read_image(path, layout).layers["fc"]


def words_payload(start, words, nbytes):
    return start.to_bytes(2, "little") + b"".join(w.to_bytes(nbytes, "little") for w in words)


def test_status_write_and_gemv(setup):
    cb, layout, layer = setup
    dut = Accelerator(layout, max_rows=8, max_cols=128, build_id=0x1234ABCD)
    wbytes, sbytes = P.nbytes(layout.weight_width), P.nbytes(layout.scale_width)
    xbytes = P.nbytes(dut.engine.x.payload.shape().size)
    rbytes = P.nbytes(dut.engine.acc_bits)
    x = encode(torch.randn(128, generator=torch.Generator().manual_seed(1)), cb)
    beats = activation_beats(x, layout.geometry)
    reqs = [P.request(P.CMD_STATUS),
            P.request(P.CMD_WRITE_CODEBOOK, words_payload(0, [v & 0xFF for v in cb.entries.flatten().tolist()], 1)),
            P.request(P.CMD_WRITE_WEIGHTS, words_payload(0, layer.weight_words, wbytes)),
            P.request(P.CMD_WRITE_SCALES, words_payload(0, layer.scale_words, sbytes)),
            P.request(P.CMD_GEMV, words_payload(5, beats, xbytes))]
    replies = [P.parse_reply(r) for r in exchange(dut, reqs)]
    assert replies[0] == (P.STATUS_OK, status_payload(dut.engine, 0x1234ABCD))
    assert replies[1:4] == [(P.STATUS_OK, b"")] * 3
    status, payload = replies[4]
    assert status == P.STATUS_OK and len(payload) == 5 * rbytes
    got = [int.from_bytes(payload[i:i + rbytes], "little", signed=True) for i in range(0, len(payload), rbytes)]
    assert got == dot_fixed(layer.weights, x).tolist()


def test_errors_get_replies_and_change_nothing(setup):
    cb, layout, layer = setup
    dut = Accelerator(layout, max_rows=8, max_cols=128)
    good = P.request(P.CMD_STATUS)
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    reqs = [bad_crc, P.request(0x7E, b"\x01\x02"), P.request(P.CMD_STATUS, b"\x00"),
            P.request(P.CMD_WRITE_WEIGHTS, b"\x00\x00\x01"),            # not a whole word
            P.request(P.CMD_WRITE_SCALES, words_payload(1 << 15, [1], 4)),  # past the memory
            P.request(P.CMD_GEMV, words_payload(0, [1], 6)),               # zero rows
            b"\x00\x13" + good]                                            # garbage before a frame
    replies = [P.parse_reply(r) for r in exchange(dut, reqs)]
    assert [s for s, _ in replies] == [P.STATUS_BAD_CRC, P.STATUS_UNKNOWN_COMMAND, P.STATUS_BAD_LENGTH,
                                       P.STATUS_BAD_LENGTH, P.STATUS_BAD_LENGTH, P.STATUS_BAD_LENGTH, P.STATUS_OK]


def test_truncated_frame_times_out_then_link_recovers(setup):
    cb, layout, _ = setup
    dut = Accelerator(layout, max_rows=8, max_cols=128, timeout_cycles=50)
    truncated = P.request(P.CMD_WRITE_SCALES, words_payload(0, [1, 2], 4))[:7]
    # The truncated request gets no reply; after the timeout the next request is answered.
    replies = exchange(dut, [truncated, 60, P.request(P.CMD_STATUS)], n_replies=1)
    assert P.parse_reply(replies[0]) == (P.STATUS_OK, status_payload(dut.engine, 0))


def test_gemv_bf16_and_its_bad_lengths(tmp_path, seed):
    """GEMV_BF16 with a 2-lane encoder (the scalars gathered two per encoder beat): bit-exact with
    the golden model; a vector that is not whole block arrays, longer than the engine, without
    scalars or with 0 rows is refused and changes nothing. The encoder's codebooks start empty:
    one codebook write fills them and the engine's."""
    cb = default_codebooks()
    layout = EngineLayout(cb.config, 2, 1)
    write_image(tmp_path, {"fc": torch.randn(5, 128, generator=torch.Generator().manual_seed(seed))}, cb, layout,
                pow2_tensor_scale=True)
    layer = read_image(tmp_path, layout).layers["fc"]
    dut = Accelerator(layout, max_rows=8, max_cols=128, build_id=3, encoder_lanes=2)
    la = cb.config.array_len
    x = torch.randn(128, generator=torch.Generator().manual_seed(seed + 1)) * 5
    bits = float_bits(x).tolist()
    ts, w_exp = tensor_scale_exp(float_bits(x), cb.config), pow2_exponent(layer.weights.tensor_scale)
    reqs = [P.request(P.CMD_STATUS),
            P.request(P.CMD_WRITE_CODEBOOK, words_payload(0, [v & 0xFF for v in cb.entries.flatten().tolist()], 1)),
            P.request(P.CMD_WRITE_WEIGHTS, words_payload(0, layer.weight_words, P.nbytes(layout.weight_width))),
            P.request(P.CMD_WRITE_SCALES, words_payload(0, layer.scale_words, P.nbytes(layout.scale_width))),
            P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(5, ts, w_exp, bits[:la + 2])),    # not whole arrays
            P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(5, ts, w_exp, bits + bits[:la])),  # past max_cols
            P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(5, ts, w_exp, [])),               # the exponents only
            P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(0, ts, w_exp, bits)),             # 0 rows
            P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(5, ts, w_exp, bits)[:-1]),        # half a word
            P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(5, ts, w_exp, bits)),
            P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(3, ts - 3, w_exp, bits))]        # saturating scale
    replies = [P.parse_reply(r) for r in exchange(dut, reqs)]
    assert replies[0] == (P.STATUS_OK, status_payload(dut.engine, 3, 2))
    assert [s for s, _ in replies] == [P.STATUS_OK] * 4 + [P.STATUS_BAD_LENGTH] * 5 + [P.STATUS_OK] * 2
    assert P.parse_bf16_results(replies[9][1]) == gemv_bf16_bits(layer.weights, float_bits(x), ts_exp=ts).tolist()
    assert P.parse_bf16_results(replies[10][1]) == \
        gemv_bf16_bits(layer.weights, float_bits(x), ts_exp=ts - 3).tolist()[:3]


def test_gemv_bf16_is_unknown_without_an_encoder(setup):
    _, layout, _ = setup
    dut = Accelerator(layout, max_rows=8, max_cols=128)
    replies = [P.parse_reply(r) for r in exchange(dut, [P.request(P.CMD_GEMV_BF16, P.gemv_bf16_payload(1, 0, 0, [0] * 64)),
                                                        P.request(P.CMD_STATUS)])]
    assert replies == [(P.STATUS_UNKNOWN_COMMAND, b""), (P.STATUS_OK, status_payload(dut.engine, 0))]
