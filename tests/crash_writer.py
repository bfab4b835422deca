"""Helper process of tests/test_image_kill.py (not a test module).

``python crash_writer.py steps WORKDIR MODEL_OLD MODEL_NEW``: for every step k of one
``bcq weights MODEL_NEW -o WORKDIR/k/img`` over an image of MODEL_OLD (every file-system call the
directory writer makes), a forked child dies with ``os._exit`` right before step k: no cleanup
runs, as after SIGKILL or a power cut. Prints one JSON line: the number of steps and, per step,
the image directory's files after the crash and after a later, complete run.

``python crash_writer.py loop IMG MODEL_A MODEL_B``: print "ready", then run ``bcq weights`` into IMG
alternating the two models, forever (the test kills it with SIGKILL at a random moment).
"""
import hashlib
import json
import os
from pathlib import Path
import shutil
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)  # no thread pool: forking after torch work stays safe

from bcq.cli import main  # noqa: E402
from bcq.sw.host import atomic_dir  # noqa: E402

TRAPPED = {"mkdir", "rename", "link", "unlink", "chmod", "rmdir"}


class _Os:
    """``os`` for the directory writer, counting the calls that change the file system."""

    def __init__(self, trap):
        self._trap = trap

    def __getattr__(self, name):
        fn = getattr(os, name)
        if name not in TRAPPED:
            return fn

        def call(*args, **kwargs):
            self._trap()
            return fn(*args, **kwargs)
        return call


def snapshot(directory):
    """{file name: SHA-256} of a directory (None if there is none)."""
    d = Path(directory)
    if not d.is_dir():
        return None
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def steps(workdir, model_old, model_new):
    work = Path(workdir)
    count = {"n": 0, "stop": None}

    def trap():
        count["n"] += 1
        if count["n"] == count["stop"]:
            os._exit(9)

    atomic_dir.os = _Os(trap)
    for fn in ("write_new", "fsync_dir", "_exchange"):
        original = getattr(atomic_dir, fn)

        def wrapped(*a, _f=original, **k):
            trap()
            return _f(*a, **k)
        setattr(atomic_dir, fn, wrapped)

    def weights(model, img):
        sys.stdout = open(os.devnull, "w")
        try:
            return main(["weights", str(model), "-o", str(img), "--quiet"])
        finally:
            sys.stdout.close()
            sys.stdout = sys.__stdout__

    # The old image, and the whole run counted once.
    template = work / "template"
    assert weights(model_old, template / "img") == 0
    (template / "img" / "notes.txt").write_text("a file of the user's, in the image directory\n")
    count["n"] = 0
    trial = work / "count"
    shutil.copytree(template, trial)
    assert weights(model_new, trial / "img") == 0
    total = count["n"]
    results = []
    for k in range(1, total + 1):
        case = work / str(k)
        shutil.copytree(template, case)
        pid = os.fork()
        if pid == 0:
            count["n"], count["stop"] = 0, k
            os._exit(weights(model_new, case / "img"))
        _, status = os.waitpid(pid, 0)
        after_crash = snapshot(case / "img")
        leftovers = sorted(p.name for p in case.iterdir() if p.name != "img")
        count["stop"] = None
        code = weights(model_new, case / "img")
        results.append({"step": k, "exit": os.waitstatus_to_exitcode(status), "after_crash": after_crash,
                        "leftovers": leftovers, "rerun_exit": code, "after_rerun": snapshot(case / "img"),
                        "left_after_rerun": sorted(p.name for p in case.iterdir() if p.name != "img")})
    print(json.dumps({"steps": total, "results": results}))


def loop(img, model_a, model_b):
    print("ready", flush=True)
    sys.stdout = open(os.devnull, "w")
    i = 0
    while True:
        main(["weights", model_a if i % 2 else model_b, "-o", img, "--quiet"])
        i += 1


if __name__ == "__main__":
    {"steps": steps, "loop": loop}[sys.argv[1]](*sys.argv[2:])
