"""--device and --precision: which device a flag names, one line for one that is not here, and
mixed precision that keeps the loss and the temperature in fp32 (on the CPU here; CUDA's own tests
are in tests/gpu/, run by benchmarks/gpu_check.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import make_squares, read_log, tiny_tinyclip

from edge_gcl.cli import main
from edge_gcl.device import DeviceError, resolve_device
from edge_gcl.train.distributed import World, init_distributed_device, world_from_env
from edge_gcl.train.precision import Precision

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without a GPU")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_squares(tmp_path_factory.mktemp("squares"), n=16, bad_rows=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_tinyclip(tmp_path_factory.mktemp("tiny") / "start")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-gcl: error: "), err
    return err[0]


# ----------------------------------------------------------------------------- devices
@no_gpu
def test_device_spellings_resolve_or_name_what_is_missing():
    assert resolve_device("auto") == torch.device("cpu")  # no GPU here: auto is the CPU
    assert resolve_device(" CPU ") == torch.device("cpu")
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(DeviceError, match=f"--device {spec}: no CUDA device here"):
            resolve_device(spec)
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="--device mps: no Apple GPU"):
            resolve_device("mps")
    for spec in ("gpu", "cuda:x", "tpu", ""):
        with pytest.raises(DeviceError, match="expected auto, cpu, cuda, cuda:N or mps"):
            resolve_device(spec)


def test_the_world_comes_from_torchrun_or_slurm():
    assert world_from_env({}) == World(0, 0, 1)
    assert world_from_env({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}) == World(5, 1, 8)
    slurm = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4"}
    assert world_from_env(slurm) == World(0, 0, 1)  # srun alone gives no rendezvous address: one process
    assert world_from_env({**slurm, "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}) == World(3, 1, 4)
    with pytest.raises(DeviceError, match="names one GPU for 2 processes"):
        init_distributed_device("cuda:1", {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})


@no_gpu
def test_a_missing_device_is_one_line_before_anything_loads(data, tiny, tmp_path, capsys):
    # train: the device is refused before the data is read (this --data does not exist)
    assert main(["train", "--device", "cuda", "--data", str(tmp_path / "nowhere.txt"), "--out", str(tmp_path / "o")]) == 1
    assert "--device cuda: no CUDA device here" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()
    assert main(["train", "--device", "cuda:7", "--model", str(tiny), "--data", str(data / "captions.txt")]) == 1
    assert "--device cuda:7" in one_error_line(capsys)
    # eval with a PyTorch model: before the model loads
    root = tmp_path / "mbeir"
    for sub in ("query", "cand_pool", "qrels"):
        (root / sub).mkdir(parents=True)
    assert main(["eval", "mbeir", "--root", str(root), "--model", str(tiny), "--device", "gpu"]) == 1
    assert "--device gpu: expected auto, cpu, cuda, cuda:N or mps" in one_error_line(capsys)


def test_eval_device_is_for_pytorch_models_and_embeds_where_asked(tiny):
    from edge_gcl.models import TorchEmbedder, load_model
    from edge_gcl.runtime import RuntimeConfigError, describe, load_embedder

    embedder = load_embedder(str(tiny), device="cpu")
    assert isinstance(embedder, TorchEmbedder) and embedder.device == torch.device("cpu")
    assert "PyTorch float32 on the CPU" in describe(embedder)
    out = embedder.embed_texts(["a red square", "a blue one"])
    assert out.shape == (2, 16) and out.dtype == np.float32
    assert TorchEmbedder(load_model(str(tiny))).model_id == embedder.model_id  # the id does not depend on the device
    artifacts = Path(tiny).parent / "artifacts"
    artifacts.mkdir()
    (artifacts / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeConfigError, match="--device cuda is for PyTorch models"):
        load_embedder(artifacts, device="cuda")


# ----------------------------------------------------------------------------- precision
def test_precision_names_and_autocast():
    with pytest.raises(ValueError, match="--precision fp8: expected one of fp32, bf16, fp16"):
        Precision("fp8")
    cpu = torch.device("cpu")
    assert Precision("fp32").scaler(cpu) is None and Precision("bf16").scaler(cpu) is None
    assert isinstance(Precision("fp16").scaler(cpu), torch.amp.GradScaler)
    layer = torch.nn.Linear(4, 4)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with Precision(name).autocast(cpu):
            assert layer(torch.ones(2, 4)).dtype == dtype


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_the_loss_and_temperature_in_fp32(precision, data, tiny, tmp_path, monkeypatch):
    """The towers run under autocast (their features arrive in half precision), the loss gets fp32 features
    and an fp32 logit scale, and the first loss (before any update) is fp32's up to rounding."""
    import edge_gcl.loss

    seen = []
    real = edge_gcl.loss.create_loss

    def spy(*a, **k):
        loss = real(*a, **k)
        forward = loss.forward

        def recorded(image, text, scale, pair=None):
            seen.append((image.dtype, text.dtype, scale.dtype))
            return forward(image, text, scale, pair)

        loss.forward = recorded
        return loss

    monkeypatch.setattr(edge_gcl.loss, "create_loss", spy)
    half = []
    real_forward = __import__("edge_gcl.train.loop", fromlist=["TrainForward"]).TrainForward.forward

    def forward(self, *batch):
        out = real_forward(self, *batch)
        half.append(out[0].dtype)
        return out

    monkeypatch.setattr("edge_gcl.train.loop.TrainForward.forward", forward)
    args = ["train", "--model", str(tiny), "--data", str(data / "captions.txt"), "--batch-size", "8", "--steps", "3",
            "--warmup", "1", "--lr", "1e-3", "--workers", "0", "--checkpoint-every", "2"]
    assert main([*args, "--out", str(tmp_path / "fp32")]) == 0
    half.clear()
    assert main([*args, "--out", str(tmp_path / precision), "--precision", precision]) == 0
    assert set(half) == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert set(seen) == {(torch.float32,) * 3}
    full, mixed = read_log(tmp_path / "fp32"), read_log(tmp_path / precision)
    assert sorted(mixed) == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in mixed.values())
    assert abs(mixed[1]["loss"] - full[1]["loss"]) < 0.02 * full[1]["loss"]
    meta = json.loads((tmp_path / precision / "edge_gcl.json").read_text())
    assert meta["train"]["precision"] == precision and meta["run"]["precision"] == precision
    state = torch.load(tmp_path / precision / "checkpoints" / "step_2" / "train_state.pt", weights_only=True)
    assert (state["scaler"] is not None) == (precision == "fp16")  # fp16's loss scale resumes with the run


def test_bf16_trains_the_lite_family_from_its_stem_cache(data, tmp_path):
    args = ["train", "--data", str(data / "captions.txt"), "--batch-size", "8", "--steps", "2", "--warmup", "1",
            "--image-views", "1", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "fp32")]) == 0
    assert main([*args, "--out", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    full, mixed = read_log(tmp_path / "fp32"), read_log(tmp_path / "bf16")
    assert abs(mixed[1]["loss"] - full[1]["loss"]) < 0.02 * full[1]["loss"]


def test_train_flags_reach_the_config(tmp_path):
    from edge_gcl.cli import build_parser
    from edge_gcl.train import config_from_record, portable_record, resolve_config

    args = build_parser().parse_args(["train", "--device", "cuda:1", "--precision", "bf16", "--workers", "8",
                                      "--prefetch", "2"])
    cfg = resolve_config(args)
    assert (cfg.device, cfg.precision, cfg.workers, cfg.prefetch) == ("cuda:1", "bf16", 8, 2)
    # read back on another machine: how it trained (precision) is kept, where it ran (device, workers) is not
    back = config_from_record(portable_record(cfg))
    assert (back.precision, back.device, back.workers, back.prefetch) == ("bf16", "auto", 2, 4)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--precision", "fp8"])  # argparse: usage and one error line
    assert exit_.value.code == 2
