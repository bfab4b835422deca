"""`bcq weights -o EXISTING_IMAGE` killed mid-write: the directory holds the whole old image or
the whole new one, never a mix, and a later run removes what the killed one left.

Two ways: every step of the directory writer in turn (a forked writer dies with ``os._exit``
right before file-system call k: no cleanup runs, as after SIGKILL), and SIGKILL from outside at
random moments of a writer that rewrites the image in a loop."""
import hashlib
import json
import os
from pathlib import Path
import random
import shutil
import signal
import subprocess
import sys
import time

import torch

from bcq.cli import main
from bcq.sw.host.image import read_image

HELPER = Path(__file__).with_name("crash_writer.py")
NOTES = "a file of the user's, in the image directory\n"


def snapshot(directory):
    """{file name: SHA-256} of a directory, as crash_writer.py takes it (None if there is none)."""
    d = Path(directory)
    if not d.is_dir():
        return None
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def models(tmp_path, seed):
    """Two small models with different weights and partly different layer names (so the new
    image must also drop files of the old one)."""
    g = torch.Generator().manual_seed(seed)
    old = {"enc.0.weight": torch.randn(16, 128, generator=g), "enc.1.weight": torch.randn(8, 64, generator=g)}
    new = {"enc.0.weight": torch.randn(16, 128, generator=g), "enc.2.weight": torch.randn(12, 192, generator=g),
           "enc.3.weight": torch.randn(4, 64, generator=g)}
    torch.save(old, tmp_path / "old.pt")
    torch.save(new, tmp_path / "new.pt")
    return tmp_path / "old.pt", tmp_path / "new.pt"


def reference(tmp_path, model, name, notes=True):
    """The image a complete run writes (plus the user's file), and its snapshot."""
    img = tmp_path / name / "img"
    assert main(["weights", str(model), "-o", str(img), "--quiet"]) == 0
    if notes:
        (img / "notes.txt").write_text(NOTES)
    return snapshot(img)


def child_env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HELPER.parent)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_a_crash_at_every_step_leaves_the_old_or_the_new_image(tmp_path, capsys, seed):
    old, new = models(tmp_path, seed)
    want_old, want_new = reference(tmp_path, old, "ref_old"), reference(tmp_path, new, "ref_new")
    capsys.readouterr()
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, str(HELPER), "steps", str(work), str(old), str(new)], capture_output=True,
                       text=True, env=child_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    outcomes = []
    for res in out["results"]:
        k = res["step"]
        assert res["exit"] == 9, f"step {k}: the writer was not stopped there ({res})"
        assert res["after_crash"] in (want_old, want_new), f"crash before step {k} left a mixed image"
        outcomes.append("new" if res["after_crash"] == want_new else "old")
        assert res["rerun_exit"] == 0 and res["after_rerun"] == want_new, f"step {k}: the next run failed"
        assert res["left_after_rerun"] == [], f"step {k}: the next run left {res['left_after_rerun']}"
    # Every file-system step was a crash point, and the swap is one of them: both outcomes occur.
    assert out["steps"] >= 20 and "old" in outcomes and "new" in outcomes, (out["steps"], outcomes)
    assert outcomes == sorted(outcomes, key=lambda o: o == "new"), "once the new image is in, it stays"
    print(f"{out['steps']} crash points: old image kept for {outcomes.count('old')}, new image for "
          f"{outcomes.count('new')}")


def test_sigkill_of_bcq_weights_at_random_moments(tmp_path, capsys, seed):
    rng = random.Random(seed)
    a, b = models(tmp_path, seed)
    want = {"a": reference(tmp_path, a, "ref_a"), "b": reference(tmp_path, b, "ref_b")}
    capsys.readouterr()
    runs = []
    for i in range(3):
        img = tmp_path / f"run{i}" / "img"
        shutil.copytree(tmp_path / "ref_a" / "img", img)
        p = subprocess.Popen([sys.executable, str(HELPER), "loop", str(img), str(a), str(b)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=child_env())
        runs.append((img, p))
    try:
        for img, p in runs:
            assert p.stdout.readline().strip() == "ready"
        for img, p in rng.sample(runs, len(runs)):
            time.sleep(rng.uniform(0.05, 1.5))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
    finally:
        for _, p in runs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for img, p in runs:
        assert p.returncode == -signal.SIGKILL
        got = snapshot(img)
        assert got in (want["a"], want["b"]), f"SIGKILL left a mixed image in {img}"
        assert main(["image", "verify", str(img), "--quiet"]) == 0
        ref = tmp_path / ("ref_a" if got == want["a"] else "ref_b") / "img"
        assert read_image(img).layers.keys() == read_image(ref).layers.keys()
        # A later run removes whatever the killed one left beside the image.
        assert main(["weights", str(a), "-o", str(img), "--quiet"]) == 0
        assert snapshot(img) == want["a"]
        assert sorted(p.name for p in img.parent.iterdir()) == ["img"]
    capsys.readouterr()
