"""Training on several processes (torchrun, gloo on the CPU) trains exactly like one process.

GCL's negatives come from the global batch: each rank gathers every rank's features with their
gradients and computes the global loss, and DistributedDataParallel averages the gradients. So W
processes at global batch B give the loss, at every step, and the weights of one process at batch
B; and a checkpoint resumes at any world size. The tiny TinyCLIP has LayerNorm only: no per-rank
BatchNorm statistics to tell the runs apart.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import free_port, make_squares, read_log, tiny_tinyclip

from edge_gcl.cli import main

pytestmark = pytest.mark.slow
STEPS = 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 6 steps (batch 8, a checkpoint every 3) by 1 process and by 2 torchrun processes."""
    root = tmp_path_factory.mktemp("dist")
    data = make_squares(root / "data")
    start = tiny_tinyclip(root / "start")
    args = ["train", "--model", str(start), "--data", str(data / "captions.txt"), "--batch-size", "8",
            "--steps", str(STEPS), "--checkpoint-every", "3", "--lr", "1e-3", "--warmup", "1", "--cache-dir", str(root / "cache")]
    assert main([*args, "--workers", "0", "--out", str(root / "one")]) == 0
    done = torchrun(["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", free_port()],
                    [*args, "--workers", "1", "--out", str(root / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "args": args, "start": start, "one": root / "one", "two": root / "two", "two_stdout": done.stdout}


def torchrun(launcher: list[str], train_args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "edge_gcl.cli", *train_args],
                          capture_output=True, text=True, timeout=300)


def assert_same_run(a: Path, b: Path, steps) -> None:
    """Loss within 1e-4 relative at every step, the same lr and temperature, and the same final weights."""
    la, lb = read_log(a), read_log(b)
    assert set(steps) <= set(la) and set(steps) <= set(lb), (sorted(la), sorted(lb))
    for s in steps:
        assert abs(la[s]["loss"] - lb[s]["loss"]) <= 1e-4 * abs(la[s]["loss"]), (s, la[s], lb[s])
        assert la[s]["lr"] == lb[s]["lr"]
        assert abs(la[s]["temperature"] - lb[s]["temperature"]) <= 1e-5 * la[s]["temperature"]
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:  # float32 reduction order differs across ranks; Adam turns that into < 0.1 of one lr step
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-4)


def test_two_processes_train_like_one_at_every_step(runs):
    assert_same_run(runs["one"], runs["two"], range(1, STEPS + 1))
    trained = load_file(str(runs["one"] / "model.safetensors"))["text.proj.weight"]
    assert not torch.equal(trained, load_file(str(runs["start"] / "model.safetensors"))["text.proj.weight"])
    # rank 0 alone logs and writes: one log row per step, one summary
    assert sorted(read_log(runs["two"])) == list(range(1, STEPS + 1))
    assert runs["two_stdout"].count("model saved to") == 1 and "2 processes (gloo)" in runs["two_stdout"]
    import json

    assert json.loads((runs["two"] / "edge_gcl.json").read_text())["run"]["world_size"] == 2


def test_a_checkpoint_resumes_at_another_world_size_on_two_nodes(runs, tmp_path):
    """One process's step-3 checkpoint, resumed by two 'nodes' (two torchrun launchers meeting at a c10d
    rendezvous endpoint, one process each): steps 4-6 as the one-process run had them."""
    out = tmp_path / "nodes"
    shutil.copytree(runs["one"] / "checkpoints" / "step_3", out / "checkpoints" / "step_3")
    port = free_port()
    launcher = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--rdzv-id", "edge-gcl-test"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "edge_gcl.cli", *runs["args"],
           "--workers", "0", "--resume", "--out", str(out)]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [e[-2000:] for _, e in outputs]
    printed = "".join(o for o, _ in outputs)
    assert "resumed from" in printed and "at step 3" in printed and "saved by 1 processes" in printed
    assert sorted(read_log(out)) == [4, 5, 6]
    assert_same_run(runs["one"], out, range(4, STEPS + 1))


def test_two_processes_checkpoint_resumes_on_one(runs, tmp_path):
    out = tmp_path / "back-to-one"
    shutil.copytree(runs["two"] / "checkpoints" / "step_3", out / "checkpoints" / "step_3")
    assert main([*runs["args"], "--workers", "0", "--resume", "--out", str(out)]) == 0
    assert_same_run(runs["one"], out, range(4, STEPS + 1))


def test_lite_trains_on_two_processes_from_its_stem_cache(tmp_path):
    """The lite family's cached-stem path under DDP (frozen stems, BatchNorm in the trained blocks): it
    trains and logs every step. Its BatchNorm uses per-rank statistics on the CPU, so the loss is close to
    one process's, not equal (on several GPUs it is synchronised)."""
    data = make_squares(tmp_path / "data", n=16, bad_rows=False)
    args = ["train", "--data", str(data / "captions.txt"), "--batch-size", "8", "--steps", "3", "--warmup", "1",
            "--image-views", "1", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0  # builds the cache the ranks then read
    done = torchrun(["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", free_port()],
                    [*args, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert sorted(two) == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in two.values())
    assert abs(one[1]["loss"] - two[1]["loss"]) < 0.05 * one[1]["loss"]


_NODE_STORAGE = """
import sys
from pathlib import Path
from edge_gcl.train.distributed import cleanup, init_distributed_device
from edge_gcl.train.loop import _agreed_checkpoint
env = init_distributed_device("cpu")
out = Path(sys.argv[1 + env.rank])  # each rank its own --out, as two machines with local disks
report = Path(sys.argv[3]) / f"rank{env.rank}.txt"
try:
    report.write_text(f"resumes from {_agreed_checkpoint(out, env)}")
except ValueError as e:
    report.write_text(f"refused: {e}")
cleanup(env)
"""


def test_resume_needs_the_checkpoint_on_every_node(tmp_path):
    """Rank 0 picks the checkpoint; a rank that cannot read it (its --out on another disk) stops every rank
    with one line, where it used to start afresh while the others resumed."""
    shared, local = tmp_path / "shared", tmp_path / "local"
    (shared / "checkpoints" / "step_3").mkdir(parents=True)
    for name in ("train_state.pt", "model.safetensors"):
        (shared / "checkpoints" / "step_3" / name).write_bytes(b"x")
    local.mkdir()
    script = tmp_path / "storage.py"
    script.write_text(_NODE_STORAGE)

    def launch(*outs):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                               "127.0.0.1", "--master-port", free_port(), str(script), *map(str, outs), str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]

    assert launch(shared, shared) == [f"resumes from {shared / 'checkpoints' / 'step_3'}"] * 2
    lines = launch(shared, local)
    assert len(lines) == 2 and all(x.startswith("refused: --resume: ") and "not there for rank 1" in x for x in lines)
