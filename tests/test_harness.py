"""The compiled, file-driven harness (``bcq.sim.harness``): a smoke run of 10^4 vectors per
stressed configuration (``make stress`` runs 10^6), a wrong result reported with its replay
command, the cocotb replay reproducing it at the same cycle, and the file format."""
import json
import os
import re
import sys

from helpers import exactly
import numpy as np
import pytest

from bcq.hw.bcq_dot import BCQDot
from bcq.hw.bxp_mac import BxPMac
from bcq.sim.bulk import bxp_exhaustive_chunk, existing, generate
from bcq.sim.harness import (
    Chunk, HarnessMismatch, HarnessSpec, build_harness, read_chunk, replay, run, write_chunk, xorshift32,
)
from bcq.sim.stress import CONFIGS, jobs, stress_config
from bcq.sw.formats.axbxp import DEFAULT_BXP
from bcq.sw.formats.config import BCQConfig

SMOKE = int(os.environ.get("BCQ_HARNESS_VECTORS", 10000))


@pytest.mark.verilator
@pytest.mark.parametrize("name", list(CONFIGS))
def test_smoke_bit_exact(name, seed, tmp_path):
    f = stress_config(CONFIGS[name], SMOKE, seed=seed, run_dir=tmp_path / "run")
    print(f"{name}: {f['vectors']} vectors, {f['results']} results bit-exact; {f['vectors_per_s']} vectors/s, "
          f"{f['cycles']} cycles; build {f['build_s']:.0f} s")
    assert f["vectors"] == SMOKE and f["results"] >= SMOKE and f["cycles"] > 0


@pytest.mark.verilator
def test_bxp_mac_every_operand_pair(seed, tmp_path):
    """Every signed and unsigned 8-bit operand pair in exact8, every signed pair in each 8-bit
    approximate mode, one beat per vector, with stalls on both streams."""
    config = CONFIGS["bxp-mac"]
    dut = config.make()
    spec = HarnessSpec.from_component(dut, config.top)
    chunk, covered = bxp_exhaustive_chunk(DEFAULT_BXP, spec, stall=(0.1, 0.1), seed=seed)
    wide = [m for m in DEFAULT_BXP.modes if m.precision == DEFAULT_BXP.n_bits]
    want = [f"{m.name} {s}" for m in wide for s in (("signed", "unsigned") if m.kind == "exact" else ("signed",))]
    assert [label for label, _ in covered] == want and all(pairs == 1 << 16 for _, pairs in covered)
    assert chunk.n_vectors == sum(-(-(1 << 16) // DEFAULT_BXP.products_per_cycle(m)) for m in wide) + (1 << 16)
    # The expected sums come from the golden model; exact8's are plain products, in meshgrid
    # order (x major): check them (packing and sign included) against integer arithmetic.
    bits = spec.out[1]
    for k, (x, w) in enumerate([(x, w) for x in range(-128, 128) for w in range(-128, 128)]
                               + [(x, w) for x in range(256) for w in range(256)]):
        assert _signed(chunk.expected[k], bits) == x * w, (k, x, w)
    path = tmp_path / "exhaustive.bin"
    write_chunk(path, spec, chunk)
    r = run(build_harness(dut, config.top), existing, [{"path": str(path)}], run_dir=tmp_path, spec=spec)
    print(f"{chunk.n_vectors} vectors ({', '.join(f'{label}: {n}' for label, n in covered)}) bit-exact, "
          f"{r.cycles} cycles")
    assert r.results == chunk.n_vectors and r.cycles >= chunk.n_vectors


def _corrupted_chunk(tmp_path, seed, vector, vectors=300):
    config = CONFIGS["bcq-default"]
    dut = config.make()
    spec = HarnessSpec.from_component(dut, config.top)
    job = jobs(config, spec, vectors, seed, tmp_path, chunk=10 * vectors)[0]
    generate(job)
    chunk = read_chunk(job["path"], spec)
    good = chunk.expected[vector].copy()
    chunk.expected[vector, 0] ^= 1
    write_chunk(job["path"], spec, chunk)
    return build_harness(dut, config.top), spec, job["path"], chunk, good


def _signed(words, bits):
    v = sum(int(w) << (32 * k) for k, w in enumerate(words))
    return v - (1 << bits) if v >> (bits - 1) else v


@pytest.mark.verilator
def test_a_wrong_result_is_reported_and_replays_at_the_same_cycle(seed, tmp_path):
    k = 123
    build_dir, spec, path, chunk, good = _corrupted_chunk(tmp_path, seed, k)
    with pytest.raises(HarnessMismatch) as err:
        run(build_dir, existing, [{"path": path}], run_dir=tmp_path, spec=spec)
    bits = spec.out[1]
    got_hex = "0x" + "".join(f"{int(w):08x}" for w in reversed(good))
    want_hex = "0x" + "".join(f"{int(w):08x}" for w in reversed(chunk.expected[k]))
    replay_cmd = f"{sys.executable} -m bcq.sim.harness replay {path} --vector {k} --waves"
    pattern = (exactly(f"harness: vector {k} (index {k} of chunk {path}, result {k}) got {got_hex}, expected "
                       f"{want_hex} at cycle ")[:-1] + r"(\d+)" +
               exactly(f" of the chunk; stall seed {chunk.seed}\nreplay in cocotb with waves: {replay_cmd}\n"
                       f"  got      {_signed(good, bits)}\n  expected {_signed(chunk.expected[k], bits)}")[1:])
    found = re.match(pattern, str(err.value))
    assert found, str(err.value)
    cycle = int(found.group(1))
    assert os.path.exists(path)   # the failing chunk is kept for the replay

    # The replay (cocotb, same file and seed) fails at the same vector and cycle...
    with pytest.raises(AssertionError):
        replay(path, vector=k, waves=False, test_dir=tmp_path / "replay")
    log = (tmp_path / "replay" / "sim.log").read_text()
    assert (f"vector {k} (index {k} of {path}, result {k}) got {int(got_hex, 16):#x}, expected "
            f"{int(want_hex, 16):#x} at cycle {cycle} of the chunk; stall seed {chunk.seed}") in log
    # ... and, up to the vector before, matches.
    replay(path, vector=k - 1, waves=False, test_dir=tmp_path / "replay-ok")


@pytest.mark.verilator
def test_a_missing_result_is_reported_as_a_hang(seed, tmp_path):
    build_dir, spec, path, chunk, good = _corrupted_chunk(tmp_path, seed, 0, vectors=20)
    assert chunk.n_vectors == len(chunk.expected) == 20
    chunk.expected[0] = good
    chunk.expected = np.concatenate([chunk.expected, chunk.expected[-1:]])   # one result too many
    chunk.result_vector = np.concatenate([chunk.result_vector, [19]])
    write_chunk(path, spec, chunk)
    with pytest.raises(HarnessMismatch) as err:
        run(build_dir, existing, [{"path": path}], run_dir=tmp_path, spec=spec)
    assert re.fullmatch(
        exactly("harness: no handshake for 100000 cycles, at cycle ")[1:-1] + r"\d+" +
        exactly(f" of chunk {path} (beats {len(chunk.beats)} of {len(chunk.beats)} in, results 20 of 21 out); "
                f"stall seed {chunk.seed}\nreplay in cocotb with waves: {sys.executable} -m bcq.sim.harness "
                f"replay {path} --vector 19 --waves")[1:-1], str(err.value)), str(err.value)


def test_spec_is_read_from_the_signature():
    dut = BCQDot(BCQConfig(), max_len=1024)
    bcq = HarnessSpec.from_component(dut, "bcq_dot")
    # Default config (Nc = 8): an 87-bit beat (docs/arithmetic.md's table), a pair table of
    # 8 x 128 words of 3 x 6 bits (sw/contract/tables.py).
    assert bcq.to_json() == {"top": "bcq_dot", "inp": ("i", 87), "out": ("o", dut.acc_bits),
                             "writes": (("cbw", 10, 18),), "sets": ()}
    gemv_dut = CONFIGS["gemv"].make()
    gemv = HarnessSpec.from_component(gemv_dut, "gemv")
    assert (gemv.inp, gemv.out[0], gemv.writes[2], gemv.sets) == (("x", 44), "o", ("cbw", 7, 6), (("rows", 4),))
    # Setup records carry the widest write (the weight word: decoded codewords, image v2) in 32-bit words.
    layout = gemv_dut.layout
    assert [w[0] for w in gemv.writes] == ["wmem", "smem", "cbw"]
    assert (gemv.writes[0][2], gemv.writes[1][2]) == (layout.weight_width, layout.scale_width)
    assert gemv.setup_words == -(-max(layout.weight_width, layout.scale_width, 6, 4) // 32)
    bxp = HarnessSpec.from_component(BxPMac(), "bxp_mac")
    assert (bxp.inp, bxp.writes, bxp.in_words) == (("i", 262), (), 9)
    assert HarnessSpec.from_json(json.loads(json.dumps(gemv.to_json()))) == gemv
    with pytest.raises(ValueError, match=exactly(
            "bcq_dot: name the input and output streams (inputs ['i'], outputs ['o'])")):
        HarnessSpec.from_component(BCQDot(BCQConfig(), max_len=1024), "bcq_dot", inp="x")


def test_chunk_file_round_trip(tmp_path):
    spec = HarnessSpec.from_component(CONFIGS["gemv"].make(), "gemv")
    rng = np.random.default_rng(0)
    chunk = Chunk([("wmem", 3, (1 << 140) + 5), ("cbw", 7, -3), ("rows", 0, 11)],
                  rng.integers(0, 1 << 32, (9, 2), dtype=np.uint32), np.arange(6, dtype=np.uint32),
                  rng.integers(0, 1 << 32, (6, 2), dtype=np.uint32), 6, 100, 0.25, 0.5, 77)
    write_chunk(tmp_path / "c.bin", spec, chunk)
    back = read_chunk(tmp_path / "c.bin", spec)
    assert back.setup == [("wmem", 3, (1 << 140) + 5), ("cbw", 7, (1 << (32 * spec.setup_words)) - 3), ("rows", 0, 11)]
    assert np.array_equal(back.beats, chunk.beats) and np.array_equal(back.expected, chunk.expected)
    assert (back.n_vectors, back.first_vector, back.stall_in, back.stall_out, back.seed) == (6, 100, 0.25, 0.5, 77)
    assert not list(tmp_path.glob("*.tmp"))
    bcq = HarnessSpec.from_component(BCQDot(BCQConfig(), max_len=1024), "bcq_dot")
    with pytest.raises(ValueError, match=exactly(
            f"{tmp_path / 'c.bin'}: word counts 2/2/{spec.setup_words} do not fit the design's 3/2/1")):
        read_chunk(tmp_path / "c.bin", bcq)


def test_xorshift32_is_marsaglias():
    """The stall generator shared by the C++ harness and the cocotb replay: Marsaglia's
    xorshift32 (13, 17, 5), whose paper gives 723471715 after 2463534242."""
    assert xorshift32(2463534242) == 723471715
