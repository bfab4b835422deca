"""The compiled, file-driven harness: a unit runs free on Verilator over vectors from files.

Generic: it knows a design only by its ports, read from the Amaranth component's signature
(:meth:`HarnessSpec.from_component`): one input stream and one output stream (``valid``/``ready``
/``payload``), and for the setup phase its memory write ports (``en``/``addr``/``data``) and
plain inputs (e.g. the engine's ``rows``). Nothing about the datapath.

Flow (``run``): worker processes generate chunk files (golden stimulus and expected results,
vectorized, ``bcq.sim.bulk``) while one C++ testbench, compiled once per design
(:func:`build_harness`), streams them through the design in order. Per chunk it applies the
setup writes (one per cycle, the unit idle), then drives every beat with ``valid`` gaps and
``ready`` back-pressure from a seeded xorshift32 generator, compares every result with the
file, and on the first mismatch prints the vector, the chunk's seed and file, and the command
that replays it in cocotb with waves (``python -m bcq.sim.harness replay CHUNK --vector K
--waves``, which runs ``bcq.sim.tb_harness``: the same file, seed and cycle-by-cycle decisions).

Chunk file (little-endian uint32 words; beats and results are :func:`bcq.sw.contract.packing.
pack_words` rows, bit 0 of the payload in bit 0 of the first word)::

    header   MAGIC, VERSION, in_words, out_words, setup_words, n_setup, n_beats, n_results,
             n_vectors, first_vector, stall_in, stall_out, seed      (stalls: probability * 65536)
    setup    n_setup x [port, addr, data[setup_words]]   (port: write ports, then plain inputs)
    beats    n_beats x [in_words]
    vector   n_results x [1]       (the chunk's vector each result belongs to)
    expected n_results x [out_words]

Per cycle, with the clock low: ``r_in``, ``r_out`` = the next two xorshift32 values;
``in.valid`` = a beat is left and ``r_in >> 16 >= stall_in``; ``out.ready`` =
``r_out >> 16 >= stall_out``; settle; sample both handshakes; rising edge.
"""

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
import hashlib
import json
import multiprocessing
import os
from pathlib import Path
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time

from amaranth.hdl import Shape
from amaranth.lib import data
import numpy as np

from bcq.hw.export import verilog_text
from bcq.sw.contract.packing import words_to_int

from .runner import ROOT, WAIVERS, build_text, locked, pch_workaround, run_cocotb, verilator_env, with_cell_models

__all__ = ["HarnessSpec", "Chunk", "write_chunk", "read_chunk", "harness_cpp", "build_harness", "run", "generation_pool",
           "RunResult", "HarnessMismatch", "replay", "xorshift32", "MAGIC", "VERSION"]

MAGIC = 0x48514342      # "BCQH"
VERSION = 1
HEADER_WORDS = 13
STALL_ONE = 1 << 16


def _words(width):
    return max(1, -(-width // 32))


@dataclass(frozen=True)
class HarnessSpec:
    """The ports of a design, as the harness drives them.

    Parameters
    ----------
    top : str
        Verilog module name.
    inp, out : (name, width)
        The input and output streams: member name and payload width (``inp`` is driven,
        ``out`` checked); Verilog ports ``<name>__valid`` etc.
    writes : tuple of (name, addr_width, data_width)
        Memory write ports (``<name>__en``, ``__addr``, ``__data``) for the setup phase.
    sets : tuple of (name, width)
        Plain inputs set in the setup phase; they hold their value until set again.
    layouts : dict
        ``inp``/``out`` payload layouts (Amaranth shapes), for messages; not serialized.
    """

    top: str
    inp: tuple
    out: tuple
    writes: tuple = ()
    sets: tuple = ()
    layouts: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_component(cls, dut, top, *, inp=None, out=None):
        """Read the ports from ``dut.signature``: streams are members with exactly ``payload``,
        ``valid`` and ``ready``; write ports ``en``, ``addr`` and ``data`` (inputs); plain
        ``In`` ports are set in the setup phase. ``inp``/``out`` name the streams when a design
        has several."""
        streams_in, streams_out, writes, sets, layouts = [], [], [], [], {}
        for name, member in dut.signature.members.items():
            if not member.is_signature:
                if member.flow.name == "In":
                    sets.append((name, Shape.cast(member.shape).width))
                continue
            subs = dict(member.signature.members.items())
            if set(subs) == {"payload", "valid", "ready"}:
                layouts[name] = subs["payload"].shape
                (streams_in if member.flow.name == "In" else streams_out).append(
                    (name, Shape.cast(subs["payload"].shape).width))
            elif set(subs) == {"en", "addr", "data"}:
                writes.append((name, Shape.cast(subs["addr"].shape).width, Shape.cast(subs["data"].shape).width))
        def pick(found, want):
            if want:
                return next((s for s in found if s[0] == want), None)
            return found[0] if len(found) == 1 else None
        i, o = pick(streams_in, inp), pick(streams_out, out)
        if i is None or o is None:
            raise ValueError(f"{top}: name the input and output streams (inputs {[s[0] for s in streams_in]}, "
                             f"outputs {[s[0] for s in streams_out]})")
        return cls(top, i, o, tuple(writes), tuple(sets), {"inp": layouts[i[0]], "out": layouts[o[0]]})

    @property
    def in_words(self):
        return _words(self.inp[1])

    @property
    def out_words(self):
        return _words(self.out[1])

    @property
    def setup_words(self):
        return max([_words(w[2]) for w in self.writes] + [_words(s[1]) for s in self.sets] + [1])

    def port_index(self, name):
        """Setup record port number of a write port or plain input."""
        names = [w[0] for w in self.writes] + [s[0] for s in self.sets]
        return names.index(name)

    def to_json(self):
        return {"top": self.top, "inp": self.inp, "out": self.out, "writes": self.writes, "sets": self.sets}

    @classmethod
    def from_json(cls, d):
        return cls(d["top"], tuple(d["inp"]), tuple(d["out"]), tuple(tuple(w) for w in d["writes"]),
                   tuple(tuple(s) for s in d["sets"]))


@dataclass
class Chunk:
    """One chunk file's contents (see the module docstring)."""

    setup: list            # [(port name, addr, value int)]
    beats: np.ndarray      # uint32 [n_beats, in_words]
    result_vector: np.ndarray   # uint32 [n_results]
    expected: np.ndarray   # uint32 [n_results, out_words]
    n_vectors: int
    first_vector: int = 0
    stall_in: float = 0.0
    stall_out: float = 0.0
    seed: int = 1


def _int_words(value, n):
    return [(value >> (32 * k)) & 0xFFFFFFFF for k in range(n)]


def write_chunk(path, spec: HarnessSpec, chunk: Chunk):
    """Write ``chunk`` to ``path`` atomically (a temporary name, then a rename)."""
    sw = spec.setup_words
    setup = np.array([[spec.port_index(name), addr, *_int_words(value, sw)] for name, addr, value in chunk.setup],
                     dtype=np.uint32).reshape(-1, 2 + sw)
    beats = np.ascontiguousarray(chunk.beats, dtype=np.uint32).reshape(-1, spec.in_words)
    expected = np.ascontiguousarray(chunk.expected, dtype=np.uint32).reshape(-1, spec.out_words)
    rv = np.ascontiguousarray(chunk.result_vector, dtype=np.uint32)
    if len(rv) != len(expected):
        raise ValueError(f"{len(rv)} result vector indices for {len(expected)} results")
    seed = chunk.seed & 0xFFFFFFFF or 1   # xorshift32 never leaves 0
    header = np.array([MAGIC, VERSION, spec.in_words, spec.out_words, sw, len(setup), len(beats), len(expected),
                       chunk.n_vectors, chunk.first_vector, round(chunk.stall_in * STALL_ONE),
                       round(chunk.stall_out * STALL_ONE), seed], dtype=np.uint32)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for part in (header, setup, beats, rv, expected):
            f.write(part.astype("<u4").tobytes())
    os.replace(tmp, path)
    return path


def read_chunk(path, spec: HarnessSpec):
    """The :class:`Chunk` stored in ``path`` (checked against ``spec``)."""
    w = np.fromfile(path, dtype="<u4")
    if len(w) < HEADER_WORDS or w[0] != MAGIC or w[1] != VERSION:
        raise ValueError(f"{path}: not a harness chunk file of version {VERSION}")
    _, _, iw, ow, sw, ns, nb, nr, nv, fv, si, so, seed = (int(v) for v in w[:HEADER_WORDS])
    if (iw, ow, sw) != (spec.in_words, spec.out_words, spec.setup_words):
        raise ValueError(f"{path}: word counts {iw}/{ow}/{sw} do not fit the design's {spec.in_words}/"
                         f"{spec.out_words}/{spec.setup_words}")
    pos = HEADER_WORDS
    setup = w[pos:pos + ns * (2 + sw)].reshape(ns, 2 + sw)
    pos += ns * (2 + sw)
    beats = w[pos:pos + nb * iw].reshape(nb, iw)
    pos += nb * iw
    rv = w[pos:pos + nr]
    pos += nr
    expected = w[pos:pos + nr * ow].reshape(nr, ow)
    names = [x[0] for x in spec.writes] + [x[0] for x in spec.sets]
    return Chunk([(names[r[0]], int(r[1]), words_to_int(r[2:])) for r in setup], beats, rv, expected, nv, fv,
                 si / STALL_ONE, so / STALL_ONE, seed)


def xorshift32(state):
    """The stall generator shared by the C++ testbench and the cocotb replay: returns the next
    state (= the next value)."""
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


# -- the C++ testbench ----------------------------------------------------------------------------

def _c(port):
    """The C++ member name Verilator gives a port: "__" is reserved in C++, so an underscore
    that follows an underscore is written "__05F" (Verilator's name encoding)."""
    out, prev = [], ""
    for ch in port:
        out.append("__05F" if ch == "_" and prev == "_" else ch)
        prev = ch
    return "".join(out)


def _put(port, width, src):
    """C++ statements putting the words at ``src`` on input ``port`` (upper bits cleared)."""
    port = _c(port)
    n = _words(width)
    top_mask = (1 << (width - 32 * (n - 1))) - 1
    if width > 64:
        return "".join(f"t->{port}[{k}] = {src}[{k}]{' & ' + hex(top_mask) + 'u' if k == n - 1 else ''}; "
                       for k in range(n))
    if width > 32:
        return f"t->{port} = ((uint64_t)({src}[1] & {hex(top_mask)}u) << 32) | {src}[0]; "
    return f"t->{port} = {src}[0] & {hex(top_mask)}u; "


def _get(port, width, dst):
    port = _c(port)
    n = _words(width)
    if width > 64:
        return "".join(f"{dst}[{k}] = t->{port}[{k}]; " for k in range(n))
    if width > 32:
        return f"{dst}[0] = (uint32_t)t->{port}; {dst}[1] = (uint32_t)(t->{port} >> 32); "
    return f"{dst}[0] = t->{port}; "


def harness_cpp(spec: HarnessSpec):
    """The C++ testbench for ``spec`` (the port accessors are generated; the rest is fixed)."""
    i, o = spec.inp[0], spec.out[0]
    cases = []
    for k, (name, _, dw) in enumerate(spec.writes):
        cases.append(f"case {k}: t->{_c(name + '__en')} = on; t->{_c(name + '__addr')} = addr; "
                     f"{_put(name + '__data', dw, 'd')}break;")
    for k, (name, width) in enumerate(spec.sets):
        cases.append(f"case {len(spec.writes) + k}: if (on) {{ {_put(name, width, 'd')}}} break;")
    return (_CPP
            .replace("@IN_WORDS@", str(spec.in_words)).replace("@OUT_WORDS@", str(spec.out_words))
            .replace("@PUT_IN@", _put(f"{i}__payload", spec.inp[1], "w"))
            .replace("@GET_OUT@", _get(f"{o}__payload", spec.out[1], "w"))
            .replace("@I@__", _c(i + "__")).replace("@O@__", _c(o + "__"))
            .replace("@SETUP_CASES@", "\n        ".join(cases) or ";"))


_CPP = r"""// Generated by bcq.sim.harness (do not edit): the compiled, file-driven testbench.
#include "Vtop.h"
#include "verilated.h"
#if VM_COVERAGE
#include "verilated_cov.h"
#endif
#include <chrono>
#include <cstdint>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

static const uint32_t MAGIC = 0x48514342u, VERSION = 1, IN_WORDS = @IN_WORDS@, OUT_WORDS = @OUT_WORDS@;

static inline void put_in(Vtop* t, const uint32_t* w) { @PUT_IN@}
static inline void get_out(Vtop* t, uint32_t* w) { @GET_OUT@}
static inline void setup_port(Vtop* t, uint32_t port, uint32_t addr, const uint32_t* d, bool on) {
    switch (port) {
        @SETUP_CASES@
        default: break;
    }
}
static inline uint32_t xorshift32(uint32_t& s) { s ^= s << 13; s ^= s >> 17; s ^= s << 5; return s; }

static void hex_words(const uint32_t* w, int n, char* out) {
    out += sprintf(out, "0x");
    for (int k = n - 1; k >= 0; k--) out += sprintf(out, "%08x", w[k]);
}

int main(int argc, char** argv) {
    std::string replay = "python -m bcq.sim.harness replay", coverage;
    uint64_t max_idle = 100000;
    for (int a = 1; a + 1 < argc; a += 2) {
        std::string k = argv[a];
        if (k == "--replay") replay = argv[a + 1];
        else if (k == "--coverage") coverage = argv[a + 1];
        else if (k == "--max-idle") max_idle = std::stoull(argv[a + 1]);
    }
    auto ctx = std::make_unique<VerilatedContext>();
    auto t = std::make_unique<Vtop>(ctx.get());
    t->clk = 0; t->rst = 1; t->@I@__valid = 0; t->@O@__ready = 0;
    for (int c = 0; c < 2; c++) { t->clk = 0; t->eval(); t->clk = 1; t->eval(); }
    t->rst = 0; t->clk = 0; t->eval();
    uint64_t total_cycles = 0;
    std::string path;
    while (std::getline(std::cin, path)) {
        if (path.empty()) continue;
        FILE* f = fopen(path.c_str(), "rb");
        if (!f) { printf("ERROR cannot open chunk %s\n", path.c_str()); fflush(stdout); return 2; }
        std::vector<uint32_t> w;
        uint32_t buf[4096];
        size_t got;
        while ((got = fread(buf, 4, 4096, f)) > 0) w.insert(w.end(), buf, buf + got);
        fclose(f);
        if (w.size() < 13 || w[0] != MAGIC || w[1] != VERSION || w[2] != IN_WORDS || w[3] != OUT_WORDS) {
            printf("ERROR %s: not a chunk for this design (magic/version/word counts)\n", path.c_str());
            fflush(stdout); return 2;
        }
        const uint32_t setup_words = w[4], n_setup = w[5], n_beats = w[6], n_results = w[7], n_vectors = w[8];
        const uint32_t first_vector = w[9], stall_in = w[10], stall_out = w[11], seed = w[12];
        size_t pos = 13;
        const uint32_t* setup = &w[pos]; pos += (size_t)n_setup * (2 + setup_words);
        const uint32_t* beats = &w[pos]; pos += (size_t)n_beats * IN_WORDS;
        const uint32_t* vec = &w[pos]; pos += n_results;
        const uint32_t* expected = &w[pos]; pos += (size_t)n_results * OUT_WORDS;
        if (pos != w.size()) { printf("ERROR %s: size does not match its header\n", path.c_str()); fflush(stdout); return 2; }
        auto t0 = std::chrono::steady_clock::now();
        std::clock_t c0 = std::clock();
        // Setup: one write per cycle, with the unit idle (every earlier result has left).
        t->@I@__valid = 0; t->@O@__ready = 1;
        for (uint32_t r = 0; r < n_setup; r++) {
            const uint32_t* rec = setup + (size_t)r * (2 + setup_words);
            setup_port(t.get(), rec[0], rec[1], rec + 2, true);
            t->clk = 0; t->eval(); t->clk = 1; t->eval();
            setup_port(t.get(), rec[0], rec[1], rec + 2, false);
            total_cycles++;
        }
        uint32_t s = seed, bpos = 0, rpos = 0;
        uint64_t cycles = 0, idle = 0;
        uint32_t got_w[OUT_WORDS];
        while (rpos < n_results) {
            uint32_t r_in = xorshift32(s), r_out = xorshift32(s);
            bool in_valid = bpos < n_beats && (r_in >> 16) >= stall_in;
            bool out_ready = (r_out >> 16) >= stall_out;
            t->@I@__valid = in_valid;
            if (bpos < n_beats) put_in(t.get(), beats + (size_t)bpos * IN_WORDS);
            t->@O@__ready = out_ready;
            t->clk = 0; t->eval();
            bool fire_in = in_valid && t->@I@__ready;
            bool fire_out = out_ready && t->@O@__valid;
            if (fire_out) {
                get_out(t.get(), got_w);
                const uint32_t* e = expected + (size_t)rpos * OUT_WORDS;
                if (memcmp(got_w, e, sizeof(got_w)) != 0) {
                    char g[300], x[300];
                    hex_words(got_w, OUT_WORDS, g); hex_words(e, OUT_WORDS, x);
                    uint32_t v = vec[rpos];
                    printf("MISMATCH vector=%u chunk_vector=%u result=%u cycle=%llu got=%s expected=%s seed=%u chunk=%s\n",
                           first_vector + v, v, rpos, (unsigned long long)cycles, g, x, seed, path.c_str());
                    printf("harness: vector %u (index %u of chunk %s, result %u) got %s, expected %s "
                           "at cycle %llu of the chunk; stall seed %u\n", first_vector + v, v, path.c_str(), rpos, g, x,
                           (unsigned long long)cycles, seed);
                    printf("replay in cocotb with waves: %s %s --vector %u --waves\n", replay.c_str(), path.c_str(), v);
                    fflush(stdout);
                    return 1;
                }
                rpos++;
            }
            t->clk = 1; t->eval();
            bpos += fire_in;
            cycles++;
            idle = (fire_in || fire_out) ? 0 : idle + 1;
            if (idle > max_idle) {
                printf("harness: no handshake for %llu cycles, at cycle %llu of chunk %s (beats %u of %u in, "
                       "results %u of %u out); stall seed %u\n", (unsigned long long)max_idle,
                       (unsigned long long)cycles, path.c_str(), bpos, n_beats, rpos, n_results, seed);
                printf("replay in cocotb with waves: %s %s --vector %u --waves\n", replay.c_str(), path.c_str(),
                       rpos < n_results ? vec[rpos] : 0);
                fflush(stdout);
                return 1;
            }
        }
        t->@I@__valid = 0;
        total_cycles += cycles;
        double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
        printf("DONE %s vectors=%u results=%u cycles=%llu seconds=%.6f cpu=%.6f\n", path.c_str(), n_vectors,
               n_results, (unsigned long long)cycles, sec, cpu);
        fflush(stdout);
    }
#if VM_COVERAGE
    if (!coverage.empty()) ctx->coveragep()->write(coverage.c_str());
#endif
    t->final();
    printf("END cycles=%llu\n", (unsigned long long)total_cycles);
    fflush(stdout);
    return 0;
}
"""


# -- building ---------------------------------------------------------------------------------------

def build_harness(dut, top, *, coverage=False, inp=None, out=None, base=None):
    """Verilog + C++ testbench of ``dut``, compiled once per distinct text (cached under
    ``sim_build/harness/``). Returns the build directory: ``design.v``, ``spec.json``, ``tb.cpp``
    and the binary ``obj/harness``."""
    spec = HarnessSpec.from_component(dut, top, inp=inp, out=out)
    return build_harness_text(verilog_text(dut, top, src=coverage), spec, coverage=coverage, base=base)


OPT_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert"]


def build_harness_text(text, spec: HarnessSpec, *, coverage=False, base=None):
    """:func:`build_harness` from Verilog text and a spec."""
    binary = verilator_env()
    cpp = harness_cpp(spec)
    cov = ["--coverage-line", "--coverage-toggle"] if coverage else []
    flags = OPT_FLAGS + cov + ["-CFLAGS", "-O2"]
    key = hashlib.sha256("\0".join([text, cpp, WAIVERS.read_text(), *flags]).encode()).hexdigest()[:16]
    base = Path(base or os.environ.get("BCQ_SIM_BUILD", ROOT / "sim_build")) / "harness"
    build_dir = base / f"{spec.top}{'-cov' if coverage else ''}-{key}"
    with locked(base / f".{spec.top}-{key}.lock"):
        if not (build_dir / "BUILT").exists():
            if build_dir.exists():
                shutil.rmtree(build_dir)
            build_dir.mkdir(parents=True)
            (build_dir / "design.v").write_text(with_cell_models(text))
            (build_dir / "tb.cpp").write_text(cpp)
            (build_dir / "spec.json").write_text(json.dumps(spec.to_json(), indent=1))
            t0 = time.monotonic()
            verilate = [str(binary), "--cc", "--exe", *flags, "-Wno-fatal", str(WAIVERS), "design.v", "tb.cpp",
                        "--top-module", spec.top, "--prefix", "Vtop", "-Mdir", "obj", "-o", "harness"]
            make = ["make", "-j", "2", "-C", "obj", "-f", "Vtop.mk"]
            runtime = base / f"runtime-{hashlib.sha256(' '.join(flags + [str(binary)]).encode()).hexdigest()[:12]}"
            log = []
            with pch_workaround():
                for k, cmd in enumerate((verilate, make)):
                    if k == 1 and runtime.is_dir():
                        _reuse_runtime(runtime, build_dir / "obj")
                    r = subprocess.run(cmd, cwd=build_dir, capture_output=True, text=True)
                    log.append(" ".join(cmd) + "\n" + r.stdout + r.stderr)
                    if r.returncode:
                        (build_dir / "build.log").write_text("\n".join(log))
                        raise RuntimeError(f"harness build failed; log {build_dir / 'build.log'}:\n"
                                           f"{(r.stdout + r.stderr)[-3000:]}")
            (build_dir / "build.log").write_text("\n".join(log))
            _keep_runtime(runtime, build_dir / "obj")
            (build_dir / "BUILT").write_text(json.dumps({"seconds": time.monotonic() - t0}))
    return build_dir


# Verilator's runtime library (verilated.cpp and friends) is most of a small design's compile
# time and does not depend on the design, only on the flags: compiled once per flag set, its
# objects are put in each new build before `make`, which then finds them up to date.
def _reuse_runtime(runtime, obj):
    for f in runtime.glob("verilated*.o"):
        shutil.copy(f, obj / f.name)   # a fresh mtime: newer than the runtime's sources


def _keep_runtime(runtime, obj):
    if runtime.is_dir():
        return
    tmp = runtime.with_name(runtime.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in obj.glob("verilated*.o"):
        shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(runtime)
    except OSError:   # another process kept it first
        shutil.rmtree(tmp, ignore_errors=True)


def build_seconds(build_dir):
    return json.loads((Path(build_dir) / "BUILT").read_text())["seconds"]


# -- running ----------------------------------------------------------------------------------------

class HarnessMismatch(AssertionError):
    """The design disagreed with the expected results (or hung); the message says where and how
    to replay it."""


@dataclass
class RunResult:
    vectors: int
    results: int
    cycles: int
    wall_s: float          # first job submitted .. last chunk checked
    sim_s: float           # time the simulator spent simulating (waits for chunks excluded)
    gen_s: float           # generation time summed over the chunks (worker processes)
    chunks: int
    run_dir: Path
    sim_cpu_s: float = 0.0   # CPU time of the simulator process (the same work on an idle core)
    gen_cpu_s: float = 0.0   # CPU time of the generation (summed over chunks)

    @property
    def vectors_per_s(self):
        return self.vectors / self.wall_s

    @property
    def overlap(self):
        """Share of the generation time hidden behind the simulation: 1 = all of it."""
        hidden = self.gen_s + self.sim_s - self.wall_s
        return max(0.0, min(1.0, hidden / self.gen_s)) if self.gen_s else 1.0


def _mp_context():
    # torch in the parent may hold thread pools that a fork would copy half-locked: spawn.
    return multiprocessing.get_context("spawn")


def generation_pool(workers=1, warm_up=None):
    """Worker processes for :func:`run`, started now (so that their start-up, e.g. importing
    torch, overlaps the build); ``warm_up`` (a module-level function) runs once in each."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context())
    if warm_up is not None:
        for _ in range(workers):
            pool.submit(warm_up)
    return pool


def run(build_dir, generator, jobs, *, run_dir, workers=1, lookahead=3, keep=False, coverage=None, log=None,
        spec=None, pool=None):
    """Stream the chunks that ``generator(job)`` writes (each job a dict with at least ``path``;
    ``generator`` a module-level function returning ``{"path", "vectors", "seconds", "cpu_seconds"}``) through
    the compiled harness in ``build_dir``, generating up to ``lookahead`` chunks ahead in
    ``workers`` processes. Raises :class:`HarnessMismatch` on the first wrong result or hang;
    the failing chunk stays in ``run_dir``. ``coverage``: where a coverage build writes its
    counts. ``spec``: the design's :class:`HarnessSpec` with layouts (decodes mismatching
    payloads in the message). ``pool``: a :func:`generation_pool` to use (and shut down).
    Returns a :class:`RunResult`; its wall time starts here."""
    build_dir, run_dir = Path(build_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("design.v", "spec.json"):   # the replay command finds the design beside the chunks
        shutil.copy2(build_dir / name, run_dir / name)
    cmd = [str(build_dir / "obj" / "harness"), "--replay", f"{shlex.quote(sys.executable)} -m bcq.sim.harness replay"]
    if coverage:
        cmd += ["--coverage", str(coverage)]
    jobs = list(jobs)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        spec = spec or HarnessSpec.from_json(json.loads((run_dir / "spec.json").read_text()))
        return _run(proc, generator, jobs, run_dir, pool or generation_pool(workers), lookahead, keep, log, t0, spec)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _run(proc, generator, jobs, run_dir, pool, lookahead, keep, log, t0, spec):
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)], daemon=True).start()
    done = dict(vectors=0, results=0, cycles=0, sim_s=0.0, sim_cpu_s=0.0, chunks=0)
    failure = []

    def consume(block):
        """Read the harness's lines; returns False once it has stopped."""
        while True:
            try:
                line = lines.get(timeout=None if block else 0)
            except queue.Empty:
                return True
            if line is None:
                return False
            if line.startswith("DONE "):
                parts = line.split()
                kv = dict(p.split("=", 1) for p in parts[2:])
                done["vectors"] += int(kv["vectors"])
                done["results"] += int(kv["results"])
                done["cycles"] += int(kv["cycles"])
                done["sim_s"] += float(kv["seconds"])
                done["sim_cpu_s"] += float(kv["cpu"])
                done["chunks"] += 1
                if not keep:
                    Path(parts[1]).unlink(missing_ok=True)
                if log:
                    log(done)
                return True
            if line.startswith("END "):
                continue
            failure.append(line.rstrip("\n"))
            block = False

    gen_s = gen_cpu_s = 0.0
    alive = True
    with pool:
        pending = [pool.submit(generator, job) for job in jobs[:lookahead]]
        nxt = len(pending)
        sent = 0
        try:
            while pending and alive and not failure:
                info = pending.pop(0).result()
                gen_s += info["seconds"]
                gen_cpu_s += info["cpu_seconds"]
                proc.stdin.write(str(info["path"]) + "\n")
                proc.stdin.flush()
                sent += 1
                # Keep `lookahead` chunks generated ahead of the one being simulated.
                while alive and sent - done["chunks"] > lookahead:
                    alive = consume(block=True)
                if nxt < len(jobs):
                    pending.append(pool.submit(generator, jobs[nxt]))
                    nxt += 1
        except BrokenPipeError:
            pass
        finally:
            for fut in pending:
                fut.cancel()
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        while alive:
            alive = consume(block=True)
    rc = proc.wait()
    wall = time.monotonic() - t0
    if failure or rc:
        raise HarnessMismatch(_explain(failure, spec) or f"harness exited with status {rc}")
    return RunResult(done["vectors"], done["results"], done["cycles"], wall, done["sim_s"], gen_s, done["chunks"],
                     run_dir, done["sim_cpu_s"], gen_cpu_s)


def _explain(lines, spec):
    """The harness's own lines, plus the mismatching payloads decoded by the output layout."""
    text = "\n".join(line for line in lines if not line.startswith("MISMATCH "))
    for line in lines:
        if line.startswith("MISMATCH "):
            kv = dict(p.split("=", 1) for p in line.split()[1:])
            text += (f"\n  got      {_fields(spec, int(kv['got'], 16))}"
                     f"\n  expected {_fields(spec, int(kv['expected'], 16))}")
    return text


def _fields(spec, value):
    """A payload as its struct fields or signed value when the output layout is known (the
    spec came from the component), else as hex."""
    layout = spec.layouts.get("out")
    if isinstance(layout, data.Layout):
        return repr(data.Const(layout, value))
    if layout is not None and Shape.cast(layout).signed and value >> (spec.out[1] - 1):
        return str(value - (1 << spec.out[1]))
    return str(value) if layout is not None else hex(value)


# -- replay in cocotb -------------------------------------------------------------------------------

def replay(chunk_path, *, vector=None, waves=True, test_dir=None):
    """Run ``chunk_path`` (from its first beat, with its stall seed: the same cycles as the
    compiled harness) in cocotb on the design stored beside it, checking each result, up to
    and including ``vector`` (the chunk's index; all if None). Raises AssertionError at a
    mismatch; the waves (``WAVES``) are in ``test_dir``."""
    chunk_path = Path(chunk_path).resolve()
    run_dir = chunk_path.parent
    spec_json = json.loads((run_dir / "spec.json").read_text())
    spec = HarnessSpec.from_json(spec_json)
    build_dir = build_text((run_dir / "design.v").read_text(), spec.top, waves=waves)
    test_dir = Path(test_dir or run_dir / f"replay-{chunk_path.stem}")
    params = {"chunk": str(chunk_path), "spec": spec_json, "until": vector}
    return run_cocotb(build_dir, spec.top, "bcq.sim.tb_harness", test_dir=test_dir, waves=waves,
                      env={"HARNESS_REPLAY": json.dumps(params)}), test_dir


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bcq.sim.harness", description="compiled harness tools")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replay", help="replay a chunk file in cocotb (same seed, same cycles)")
    r.add_argument("chunk")
    r.add_argument("--vector", type=int, help="stop after this vector of the chunk")
    r.add_argument("--waves", action="store_true", help="record waves (dump.fst or dump.vcd)")
    args = ap.parse_args(argv)
    test_dir = Path(args.chunk).resolve().parent / f"replay-{Path(args.chunk).stem}"
    try:
        log, test_dir = replay(args.chunk, vector=args.vector, waves=args.waves, test_dir=test_dir)
    except AssertionError:
        found = [line for line in (test_dir / "sim.log").read_text().splitlines() if "MISMATCH" in line]
        print("replay: " + (found[0].split("MISMATCH", 1)[1].strip() if found else "failed; see the log"))
        print(f"log (and waves with --waves) in {test_dir}")
        return 1
    print(f"replay: every result matched; log {log}" + (f", waves in {test_dir}" if args.waves else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
