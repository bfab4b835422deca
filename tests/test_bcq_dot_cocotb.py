"""The BCQ dot-product unit on Verilator through cocotb, bit-exact against the golden model.

The volume (10^4 vectors for every configuration in `make test`, 10^6 in `make stress`) runs in
the compiled harness (tests/test_harness.py); cocotb keeps the directed cases with random
stalls, the independent file-driven testbench and the second simulator."""
import json
import os

import pytest
import torch

from bcq.hw.bcq_dot import BCQDot
from bcq.sim.runner import build, icarus_available, run_cocotb
from bcq.sim.vectors import make_cases, random_codebooks
from bcq.sw.contract.beats import bcq_vector_beats
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.contract.tables import pair_table_words
from bcq.sw.formats.config import BCQConfig

pytestmark = [pytest.mark.verilator]

# (id, config, blocks per cycle). The other configurations (Lb=4/Nc=4, Nc=1, E8M0, 2 blocks
# per cycle) run in the compiled harness (tests/test_harness.py).
CONFIGS = [
    ("default", BCQConfig(), 1),
]
VECTORS = int(os.environ.get("BCQ_TB_VECTORS", 2000))
MAX_ARRAYS = 16


@pytest.mark.parametrize("name,cfg,bpc", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_random_and_directed_vectors(name, cfg, bpc, seed, tmp_path, request):
    max_len = MAX_ARRAYS * cfg.array_len
    dut = BCQDot(cfg, blocks_per_cycle=bpc, max_len=max_len)
    build_dir = build(dut, "bcq_dot")
    params = {"config": cfg.to_dict(), "blocks_per_cycle": bpc, "max_len": max_len, "seed": seed,
              "count": VECTORS, "stall_in": 0.2, "stall_out": 0.3,
              "replay": f"SEED={seed} pytest '{request.node.nodeid}'"}
    log = run_cocotb(build_dir, "bcq_dot", "bcq.sim.tb_bcq_dot", test_dir=tmp_path,
                     env={"BCQ_TB": json.dumps(params)})
    stats = json.loads((tmp_path / "throughput.json").read_text())
    print(f"{name}: {stats['vectors']} vectors, {stats['cycles']} cycles, "
          f"{stats['vectors'] / stats['seconds']:.0f} vectors/s, {stats['cycles'] / stats['seconds']:.0f} cycles/s; log {log}")
    assert stats["vectors"] >= VECTORS


def write_vector_file(path, codebooks, cases, corrupt=None):
    """The file the independent testbench reads: the codebook port's words (the pair table),
    packed beats and expected results (golden), with the expectation of case ``corrupt`` off by
    one."""
    spec = {"codebook": pair_table_words(codebooks),
            "vectors": [{"beats": [f"{b:x}" for b in bcq_vector_beats(c.w, c.x, BeatGeometry(c.w.config))], "expected": c.expected + (k == corrupt)}
                        for k, c in enumerate(cases)]}
    path.write_text(json.dumps(spec))
    return path


def test_replay_from_vector_file(seed, tmp_path):
    """The independent testbench: it reads only a file of beats and expected results."""
    cfg = BCQConfig()
    max_len = MAX_ARRAYS * cfg.array_len
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    vec_file = write_vector_file(tmp_path / "vectors.json", cb, make_cases(cfg, cb, seed=seed, count=500, max_len=max_len))
    build_dir = build(BCQDot(cfg, max_len=max_len), "bcq_dot")
    run_cocotb(build_dir, "bcq_dot", "bcq.sim.tb_bcq_dot_files", test_dir=tmp_path / "run",
               env={"BCQ_VECTORS": str(vec_file)})


def test_a_wrong_expectation_fails(seed, tmp_path):
    """The harness can fail: one corrupted expected value must make the run fail."""
    cfg = BCQConfig()
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    write_vector_file(tmp_path / "v.json", cb, make_cases(cfg, cb, seed=seed, count=5, max_len=MAX_ARRAYS * cfg.array_len),
                      corrupt=3)
    build_dir = build(BCQDot(cfg, max_len=MAX_ARRAYS * cfg.array_len), "bcq_dot")
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(build_dir, "bcq_dot", "bcq.sim.tb_bcq_dot_files", test_dir=tmp_path / "run",
                   env={"BCQ_VECTORS": str(tmp_path / "v.json")})


def test_second_simulator_icarus(seed, tmp_path):
    """The same Verilog and the same file-driven testbench on Icarus Verilog (Debian's iverilog,
    not installed by `make install`): results must equal the golden model there too."""
    if not icarus_available():
        pytest.skip("iverilog/vvp not on PATH: install Debian's iverilog (apt-get install iverilog) to run "
                    "the second-simulator check")
    cfg = BCQConfig()
    max_len = MAX_ARRAYS * cfg.array_len
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    write_vector_file(tmp_path / "vectors.json", cb, make_cases(cfg, cb, seed=seed, count=300, max_len=max_len))
    build_dir = build(BCQDot(cfg, max_len=max_len), "bcq_dot", simulator="icarus")
    run_cocotb(build_dir, "bcq_dot", "bcq.sim.tb_bcq_dot_files", test_dir=tmp_path / "run", simulator="icarus",
               env={"BCQ_VECTORS": str(tmp_path / "vectors.json")})
