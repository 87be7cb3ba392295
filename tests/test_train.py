"""Training end to end on a tiny synthetic data set: bad rows, checkpoints, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_helpers import COLOURS, make_squares, tiny_tinyclip

from edge_gcl.cli import main
from edge_gcl.models import load_model
from edge_gcl.train import (
    RECIPE_DIR,
    TrainConfig,
    batch_indices,
    caption_groups,
    config_from_record,
    pair_caption_choice,
    portable_record,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_squares(tmp_path_factory.mktemp("pairs"))


def _train(data, out, cache, *extra):
    return main(["train", "--data", str(data / "captions.txt"), "--batch-size", "8", "--lr", "1e-3", "--warmup", "2",
                 "--out", str(out), "--cache-dir", str(cache), "--image-views", "2", *extra])


def _refused(capsys, message: str, run) -> None:
    """`run` (an `edge-gcl train` call) exits 1 with one line, `edge-gcl: error: ...message...`, no traceback."""
    capsys.readouterr()
    assert run() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-gcl: error: ") and message in err[0], err


def test_train_skips_bad_rows_and_resumes_exactly(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "a", cache, "--steps", "6", "--checkpoint-every", "3") == 0
    out = capsys.readouterr().out
    assert "1 corrupt image" in out and "1 missing image file" in out and "1 empty caption" in out
    assert (tmp_path / "a" / "checkpoints" / "step_3" / "train_state.pt").exists()

    # A run killed after its step-3 checkpoint, then resumed: the same weights as the uninterrupted run.
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_3", tmp_path / "b" / "checkpoints" / "step_3")
    assert _train(data, tmp_path / "b", cache, "--steps", "6", "--checkpoint-every", "3", "--resume") == 0
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)

    # A checkpoint from before the logit scale had its own optimizer group: a clear error, the checkpoint kept.
    old = tmp_path / "old" / "checkpoints" / "step_3"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_3", old)
    state = torch.load(old / "train_state.pt", weights_only=True)
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:2]
    torch.save(state, old / "train_state.pt")
    _refused(capsys, "step_3: optimizer state with 2 parameter groups", lambda: _train(data, tmp_path / "old", cache, "--steps", "6", "--resume"))
    assert (old / "train_state.pt").exists() and (old / "model.safetensors").exists()

    model = load_model(tmp_path / "a")  # the trained folder is a model spec everywhere
    assert model.config.name == "lite"
    fresh = load_model("lite")
    w = model.visual.top.proj.weight
    assert not torch.allclose(w, fresh.visual.top.proj.weight)  # training changed the heads


def test_stem_cache_is_found_whatever_the_path_spelling(data, tmp_path, monkeypatch, capsys):
    """`~` in --cache-dir expands, and the same photos named by a relative path reuse the cache."""
    monkeypatch.setenv("HOME", str(tmp_path))
    common = ["train", "--batch-size", "8", "--steps", "1", "--image-views", "1", "--cache-dir", "~/cache"]
    assert main([*common, "--data", str(data / "captions.txt"), "--out", str(tmp_path / "a")]) == 0
    monkeypatch.chdir(data.parent)
    capsys.readouterr()
    assert main([*common, "--data", f"{data.name}/captions.txt", "--out", str(tmp_path / "b")]) == 0
    assert "stem cache: " in capsys.readouterr().out  # reused, not rebuilt
    assert len(list((tmp_path / "cache").iterdir())) == 1 and not (data.parent / "~").exists()


def test_batches_hold_distinct_photos_and_cover_an_epoch():
    seen = np.concatenate([batch_indices(50, 8, seed=1, step=s) for s in range(6)])
    assert len(set(seen.tolist())) == len(seen) == 48
    assert not np.array_equal(batch_indices(50, 8, 1, 6), batch_indices(50, 8, 2, 6))


def test_grouped_batches_keep_each_group_together_and_still_cover_an_epoch():
    groups = np.repeat(np.arange(12), 4)[np.random.default_rng(0).permutation(48)]  # 12 groups of 4, scattered
    batches = [batch_indices(48, 8, seed=3, step=s, groups=groups) for s in range(6)]
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(48))  # each photo once per epoch
    for b in batches:  # whole groups: 2 per batch of 8
        assert len(set(groups[b].tolist())) == 2
    other_epoch = np.concatenate([batch_indices(48, 8, seed=3, step=s, groups=groups) for s in range(6, 12)])
    assert not np.array_equal(seen, other_epoch)  # groups are shuffled anew each epoch
    assert np.array_equal(batch_indices(48, 8, 3, 2), batch_indices(48, 8, 3, 2, None))


def test_caption_groups_put_alike_captions_together():
    rng = np.random.default_rng(1)
    topics = rng.normal(size=(5, 16))
    features = np.repeat(topics, 20, axis=0) + 0.05 * rng.normal(size=(100, 16))  # 5 topics of 20 photos
    labels = caption_groups(features, group_size=20, seed=0)
    assert labels.max() + 1 == 5
    for t in range(5):  # every topic lands in a single group, a group of its own
        assert len(set(labels[t * 20 : (t + 1) * 20].tolist())) == 1
    assert len(set(labels[::20].tolist())) == 5
    assert np.array_equal(labels, caption_groups(features, 20, seed=0))  # seeded: every rank agrees


def test_hard_negatives_train_and_bad_values_are_refused(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "h", cache, "--steps", "2", "--hard-negatives", "4") == 0
    out = capsys.readouterr().out
    assert "hard negatives: " in out and "caption groups of about 4 photos" in out
    assert (tmp_path / "h" / "model.safetensors").exists()
    _refused(capsys, "--hard-negatives -1", lambda: _train(data, tmp_path / "bad", cache, "--steps", "1", "--hard-negatives", "-1"))


def test_modality_margin_trains_and_bad_values_are_refused(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "m", cache, "--steps", "2", "--modality-margin", "0.08") == 0
    record = json.loads((tmp_path / "m" / "edge_gcl.json").read_text())
    assert record["train"]["modality_margin"] == 0.08  # recorded, so the run can be told apart
    _refused(capsys, "--modality-margin 2.0", lambda: _train(data, tmp_path / "bad", cache, "--modality-margin", "2"))
    _refused(capsys, "only the gcl loss", lambda: _train(data, tmp_path / "bad", cache, "--loss", "cl",
                                                          "--modality-margin", "0.1"))


def test_text_photo_weight_trains_and_bad_values_are_refused(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "w", cache, "--steps", "2", "--text-photo-weight", "2") == 0
    record = json.loads((tmp_path / "w" / "edge_gcl.json").read_text())
    assert record["train"]["text_photo_weight"] == 2.0  # recorded, so the run can be told apart
    _refused(capsys, "--text-photo-weight -1.0", lambda: _train(data, tmp_path / "bad", cache,
                                                                 "--text-photo-weight", "-1"))
    _refused(capsys, "only the gcl loss", lambda: _train(data, tmp_path / "bad", cache, "--loss", "cl",
                                                          "--text-photo-weight", "2"))


def test_pair_caption_choice_picks_another_caption_where_there_is_one():
    n_caps = np.array([1, 2, 5, 5, 3] * 40)
    choice = (np.arange(len(n_caps)) * 7) % n_caps
    for step in range(5):
        pair = pair_caption_choice(n_caps, choice, seed=0, step=step)
        assert ((pair >= 0) & (pair < n_caps)).all()
        assert (pair[n_caps == 1] == choice[n_caps == 1]).all()  # one caption: the photo+note fuses it
        assert (pair[n_caps > 1] != choice[n_caps > 1]).all()
    pairs = np.stack([pair_caption_choice(n_caps, choice, 0, s) for s in range(50)])
    assert len(set(pairs[:, 2].tolist())) == 4  # every other caption of a 5-caption photo comes up
    assert np.array_equal(pair_caption_choice(n_caps, choice, 0, 3), pair_caption_choice(n_caps, choice, 0, 3))


def test_pair_caption_other_trains_differently_and_a_bad_value_is_refused(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "same", cache, "--steps", "2") == 0
    assert _train(data, tmp_path / "other", cache, "--steps", "2", "--pair-caption", "other") == 0
    record = json.loads((tmp_path / "other" / "edge_gcl.json").read_text())
    assert record["train"]["pair_caption"] == "other"
    same, other = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("same", "other"))
    assert not torch.equal(same["logit_scale"], other["logit_scale"])  # another loss, another update
    with pytest.raises(SystemExit) as exit_:  # argparse names the flag and its choices
        main(["train", "--pair-caption", "both"])
    assert exit_.value.code == 2 and "--pair-caption: invalid choice: 'both'" in capsys.readouterr().err
    config = tmp_path / "config.json"  # a config file or recipe is checked as the flag is
    config.write_text(json.dumps({"pair_caption": "both"}))
    _refused(capsys, "--pair-caption 'both': expected 'same' or 'other'",
             lambda: _train(data, tmp_path / "bad", cache, "--steps", "1", "--config", str(config)))
    # CL has no photo+note: a recipe's pair caption leaves its training as it is
    assert _train(data, tmp_path / "cl", cache, "--steps", "2", "--loss", "cl") == 0
    assert _train(data, tmp_path / "cl-other", cache, "--steps", "2", "--loss", "cl", "--pair-caption", "other") == 0
    cl, cl_other = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("cl", "cl-other"))
    assert cl.keys() == cl_other.keys() and all(torch.equal(cl[k], cl_other[k]) for k in cl)


def test_temperature_flag_sets_the_starting_temperature(data, tmp_path, capsys):
    """`--temperature` starts the learnable temperature there; without it the model's own (lite: 0.07) is kept."""
    cache = tmp_path / "cache"
    assert _train(data, tmp_path / "t", cache, "--steps", "1", "--temperature", "0.02") == 0
    assert _train(data, tmp_path / "d", cache, "--steps", "1") == 0
    for out, tau in ((tmp_path / "t", 0.02), (tmp_path / "d", 0.07)):
        scale = load_file(str(out / "model.safetensors"))["logit_scale"]
        assert abs(1 / scale.exp().item() - tau) < tau * 0.01  # one step at lr 1e-3 moves log(1/tau) by ~1e-3
    _refused(capsys, "--temperature 0.001", lambda: _train(data, tmp_path / "bad", cache, "--steps", "1", "--temperature", "0.001"))


def test_temperature_lr_mult_sets_how_fast_the_temperature_learns(data, tmp_path, capsys):
    """The logit scale has a param group of its own at lr x `--temperature-lr-mult`: 0 keeps it, 50 moves it
    about 50 times as far as the default 1 (Adam's early steps move a parameter by about its lr)."""
    cache = tmp_path / "cache"
    start = np.log(1 / 0.07)
    moved = {}
    for mult in ("0", "1", "50"):
        assert _train(data, tmp_path / mult, cache, "--steps", "2", "--temperature-lr-mult", mult) == 0
        moved[mult] = abs(load_file(str(tmp_path / mult / "model.safetensors"))["logit_scale"].item() - start)
    assert moved["0"] < 1e-6
    assert 1e-4 < moved["1"] < 3e-3  # two steps at lr 5e-4 and 1e-3
    assert 20 * moved["1"] < moved["50"] < 80 * moved["1"]
    _refused(capsys, "--temperature-lr-mult -1", lambda: _train(data, tmp_path / "bad", cache, "--steps", "1", "--temperature-lr-mult", "-1"))


# ----------------------------------------------------------------------------- held-out photos, recipes
@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two Flickr-layout sources in their own folders, a splits file beside the first and a held-out
    list elsewhere (as edge_gcl/recipes/flickr8k-extra-splits.json is for flickr8k-extra)."""
    import json

    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(1)
    for src, n in (("a", 12), ("b", 12)):
        (root / src / "images").mkdir(parents=True)
        rows = ["image,caption"]
        for i in range(n):
            name, rgb = list(COLOURS.items())[i % 4]
            a = np.clip(np.array(rgb) + rng.integers(-20, 20, (40, 56, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / src / "images" / f"{src}{i}.jpg")
            rows += [f"{src}{i}.jpg,a {name} square {src}{i}"]
        (root / src / "captions.txt").write_text("\n".join(rows) + "\n")
    (root / "a" / "splits.json").write_text(json.dumps({"train": [f"a{i}.jpg" for i in range(9)],
                                                        "dev": [f"a{i}.jpg" for i in range(9, 12)]}))
    (root / "lists").mkdir()
    (root / "lists" / "b-splits.json").write_text(json.dumps({"_about": "b's held-out photos",
                                                              "heldout": ["b0.jpg", "b1.jpg", "b2.jpg", "b3.jpg"],
                                                              "train": [f"b{i}.jpg" for i in range(4, 12)]}))
    return root


def _opened_photos(monkeypatch) -> set[str]:
    """Every photo name that training decodes in this process (stem caching, the photo check, on-the-fly
    batches) from now on: train with --workers 0."""
    import edge_gcl.train.data
    import edge_gcl.train.stems

    opened: set[str] = set()
    real = edge_gcl.train.data.load_image

    def spy(source, **kw):
        opened.add(Path(source).name)
        return real(source, **kw)

    for module in (edge_gcl.train.data, edge_gcl.train.stems):
        monkeypatch.setattr(module, "load_image", spy)
    return opened


def test_each_source_has_its_own_split_and_held_out_photos_never_reach_training(two_sources, tmp_path, monkeypatch):
    import json

    r = two_sources
    opened = _opened_photos(monkeypatch)
    args = ["train", "--data", str(r / "a" / "captions.txt"), "--split", f"{r / 'a' / 'splits.json'}:train",
            "--data", str(r / "b" / "captions.txt"), "--exclude", f"{r / 'lists' / 'b-splits.json'}:heldout",
            "--batch-size", "4", "--steps", "1", "--image-views", "1", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "run"), "--workers", "0"]
    assert main(args) == 0
    held_out = {f"a{i}.jpg" for i in range(9, 12)} | {f"b{i}.jpg" for i in range(4)}
    assert opened == {f"a{i}.jpg" for i in range(9)} | {f"b{i}.jpg" for i in range(4, 12)}
    assert not opened & held_out
    meta = json.loads((tmp_path / "run" / "edge_gcl.json").read_text())
    assert meta["data"]["photos"] == 17 and [s["photos"] for s in meta["data"]["sources"]] == [9, 8]
    assert meta["train"]["exclude"] == [f"{r / 'lists' / 'b-splits.json'}:heldout"]

    # The same by a split per source (matched by order), on the on-the-fly path of other model families.
    opened.clear()
    from edge_gcl.train import TrainConfig, load_training_pairs

    cfg = TrainConfig(data=[str(r / "a" / "captions.txt"), str(r / "b" / "captions.txt")],
                      split=[f"{r / 'a' / 'splits.json'}:train", f"{r / 'lists' / 'b-splits.json'}:train"])
    pairs = load_training_pairs(cfg)
    assert {p.name for p in pairs.images} == {f"a{i}.jpg" for i in range(9)} | {f"b{i}.jpg" for i in range(4, 12)}


def test_a_split_given_to_the_wrong_source_is_an_error(two_sources):
    from edge_gcl.train import TrainConfig, load_training_pairs

    r = two_sources
    wrong = TrainConfig(data=[str(r / "b" / "captions.txt"), str(r / "a" / "captions.txt")],
                        split=[f"{r / 'a' / 'splits.json'}:train"])
    with pytest.raises(ValueError, match="none of its 9 photos is in .*b/captions.txt"):
        load_training_pairs(wrong)
    with pytest.raises(ValueError, match="3 --split for 2 --data"):
        load_training_pairs(TrainConfig(data=wrong.data, split=["all", "all", "all"]))
    with pytest.raises(KeyError, match="no split 'heldin'"):
        load_training_pairs(TrainConfig(data=wrong.data, exclude=[f"{r / 'lists' / 'b-splits.json'}:heldin"]))
    # A config from before per-source splits: one string restricts the sources in its folder only.
    old = load_training_pairs(TrainConfig(data=wrong.data, split=f"{r / 'a' / 'splits.json'}:train"))
    assert len(old) == 12 + 9


def test_recipe_resolves_and_flags_override_it(two_sources, tmp_path):
    import json

    from edge_gcl.cli import build_parser
    from edge_gcl.train import resolve_config

    r = two_sources
    recipe = {"_about": "test", "model": "lite", "data": ["${data}/a/captions.txt", "${data}/b/captions.txt"],
              "split": ["${data}/a/splits.json:train", "all"], "exclude": ["${data}/lists/b-splits.json:heldout"],
              "lr": 1e-4, "seed": 3}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    args = build_parser().parse_args(["train", "--recipe", str(tmp_path / "r.json"), "--data-root", str(r), "--seed", "5"])
    cfg = resolve_config(args)
    assert cfg.data == [f"{r}/a/captions.txt", f"{r}/b/captions.txt"] and cfg.split == [f"{r}/a/splits.json:train", "all"]
    assert cfg.lr == 1e-4 and cfg.seed == 5 and cfg.recipe == str(tmp_path / "r.json")
    # --data replaces the recipe's sources and their splits; --exclude only adds to its held-out lists.
    args = build_parser().parse_args(["train", "--recipe", str(tmp_path / "r.json"), "--data-root", str(r),
                                      "--data", str(r / "b" / "captions.txt"), "--exclude", "x.json:dev"])
    cfg = resolve_config(args)
    assert cfg.data == [str(r / "b" / "captions.txt")] and cfg.split is None
    assert cfg.exclude == [f"{r}/lists/b-splits.json:heldout", "x.json:dev"]
    # --loss cl or pairwise is the recipe's ablation: its GCL-only options turn off; gcl keeps them
    (tmp_path / "m.json").write_text(json.dumps({**recipe, "modality_margin": 0.08, "text_photo_weight": 2.0}))
    for loss, margin, weight in (("pairwise", 0.0, 1.0), ("cl", 0.0, 1.0), ("gcl", 0.08, 2.0)):
        cfg = resolve_config(build_parser().parse_args(["train", "--recipe", str(tmp_path / "m.json"), "--loss", loss]))
        assert (cfg.loss, cfg.modality_margin, cfg.text_photo_weight) == (loss, margin, weight)
    cfg = resolve_config(build_parser().parse_args(["train", "--recipe", str(tmp_path / "m.json"), "--loss", "cl",
                                                    "--modality-margin", "0.1"]))
    assert cfg.modality_margin == 0.1  # a flag is kept, and train refuses it for cl
    (tmp_path / "bad.json").write_text(json.dumps({"lr": 1, "steps_per_epoch": 3}))
    with pytest.raises(ValueError, match="unknown training options \\['steps_per_epoch'\\]"):
        resolve_config(build_parser().parse_args(["train", "--recipe", str(tmp_path / "bad.json")]))
    with pytest.raises(FileNotFoundError, match="recipe 'nope'.*default"):
        resolve_config(build_parser().parse_args(["train", "--recipe", "nope"]))


def test_default_recipe_trains_on_the_three_sources_without_any_dev_photo(flickr):
    """`edge-gcl train --recipe default`: flickr8k train, flickr8k-extra minus its held-out photos, web-captions;
    none of the phone-library dev benchmark's photos (flickr8k dev + flickr8k-extra heldout)."""
    import json

    from edge_gcl.data import read_split
    from edge_gcl.train import RECIPE_DIR, TrainConfig, load_recipe, load_training_sources

    root = flickr.parent
    cfg = load_recipe("default", data_root=root)
    assert cfg.model == "lite" and cfg.loss == "gcl" and cfg.recipe == "default"
    assert cfg.data == [f"{root}/flickr8k/captions.txt", f"{root}/flickr8k-extra/captions.txt", f"{root}/web-captions/captions.txt"]
    assert (cfg.batch_size, cfg.lr, cfg.warmup, cfg.temperature_lr_mult, cfg.seed) == (256, 3e-4, 30, 50.0, 0)
    # trial pairother-ep15, the shipped default's (benchmarks/results/recipe_trials.json)
    assert (cfg.pair_caption, cfg.epochs, cfg.modality_margin) == ("other", 15, 0)
    base = {k: v for k, v in vars(TrainConfig()).items() if k not in {"model", "loss", "data", "split", "exclude",
            "batch_size", "epochs", "lr", "warmup", "temperature_lr_mult", "out", "recipe", "steps", "seed",
            "pair_caption"}}
    assert all(getattr(cfg, k) == v for k, v in base.items())
    sources = load_training_sources(cfg, log=lambda *_: None)
    names = [{p.name for p in s.images} for s in sources]
    dev = read_split(flickr / "splits.json", "dev")
    splits = json.loads((RECIPE_DIR / "flickr8k-extra-splits.json").read_text())
    assert len(dev) == 100 and len(splits["heldout"]) == 300
    assert not (dev | set(splits["heldout"])) & set().union(*names)
    assert [len(n) for n in names] == [700, 7091 - 300, 8000]


# ----------------------------------------------------------------------------- corrupt photos (issue 14 item 6)
def _tiny_tinyclip(folder):
    return tiny_tinyclip(folder)


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """8 good photos and one truncated JPEG that passes Image.verify() but cannot be decoded."""
    import io

    root = tmp_path_factory.mktemp("truncated")
    (root / "images").mkdir()
    rows = ["image,caption"]
    rng = np.random.default_rng(2)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)).save(root / "images" / f"{i}.jpg")
        rows.append(f"{i}.jpg,photo {i}")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 56, 3)).astype(np.uint8)).save(buf, "JPEG")
    (root / "images" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with Image.open(root / "images" / "cut.jpg") as img:
        img.verify()  # the trap: the cheap header check lets it through
    rows += ["cut.jpg,the truncated photo", "cut.jpg,its second caption"]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    return root


def test_a_photo_that_fails_to_decode_is_counted_and_never_replaced(truncated, tmp_path, capsys):
    """Other families decode on the fly: the truncated photo is dropped and reported before training, as the
    lite stem cache does, and no batch pairs another photo with its caption."""
    import json

    start = _tiny_tinyclip(tmp_path / "start")
    args = ["train", "--model", str(start), "--data", str(truncated / "captions.txt"), "--batch-size", "8",
            "--steps", "2", "--warmup", "1", "--workers", "0", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "skipped rows: 1 corrupt image" in out and "on 8 photos / 8 captions" in out
    assert json.loads((tmp_path / "run" / "edge_gcl.json").read_text())["data"]["skipped"] == {"corrupt image": 1}

    # A photo that breaks after the check: the batch fails naming it instead of swapping in another photo.
    from edge_gcl.data import read_pairs
    from edge_gcl.transform import ImageDecodeError

    pairs = read_pairs(truncated / "captions.txt")
    with pytest.raises(ImageDecodeError, match="cut.jpg: corrupt or truncated"):
        _pixel_batch(load_model(start), pairs, TrainConfig(batch_size=9))
    # the same through DataLoader workers: one line naming the photo, not the worker's traceback
    capsys.readouterr()
    assert _train_unchecked(start, truncated, tmp_path / "w") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Original" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("edge-gcl: error: ") and "cut.jpg: corrupt or truncated image" in line, err


def _pixel_batch(model, pairs, cfg, step=0):
    """Step `step`'s whole batch as the DataLoader's workers build it (one process)."""
    from edge_gcl.train.data import PhotoTable, PixelSamples, pixel_batch, step_samples

    table = PhotoTable(pairs)
    return pixel_batch(PixelSamples(table, model.config.image, model.tokenizer(), cfg.seed),
                       step_samples(table.n_captions, cfg, step))


def _train_unchecked(start, truncated, out):
    """Train with 2 DataLoader workers as if the truncated photo had passed the check before training."""
    from unittest import mock

    import edge_gcl.train.loop

    with mock.patch.object(edge_gcl.train.loop, "check_photos", lambda pairs, *a, **k: pairs):
        return main(["train", "--model", str(start), "--data", str(truncated / "captions.txt"), "--batch-size", "9",
                     "--steps", "1", "--workers", "2", "--out", str(out)])


def test_pixel_batches_carry_another_caption_for_the_photo_note(data, tmp_path):
    from edge_gcl.data import Pairs

    start = _tiny_tinyclip(tmp_path / "start")
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)).save(root / f"{i}.jpg")
    pairs = Pairs([str(root / f"{i}.jpg") for i in range(4)], [[f"first {i}", f"second {i}"] for i in range(4)])
    model = load_model(start)
    plain = _pixel_batch(model, pairs, TrainConfig(batch_size=4))
    pixels, ids, mask, pair_ids, pair_mask = _pixel_batch(model, pairs, TrainConfig(batch_size=4, pair_caption="other"))
    assert len(plain) == 3 and torch.equal(pixels, plain[0]) and torch.equal(ids, plain[1])
    assert pair_ids.shape[0] == 4 and pair_mask.shape == pair_ids.shape
    assert all(not torch.equal(ids[j], pair_ids[j]) for j in range(4))  # each sample's other caption

    # training on decoded pixels (no stem cache) encodes the second caption too, and it changes the update
    args = ["train", "--model", str(start), "--data", str(data / "captions.txt"), "--batch-size", "8", "--steps", "2",
            "--warmup", "1", "--workers", "0"]
    assert main([*args, "--out", str(tmp_path / "same")]) == 0
    assert main([*args, "--out", str(tmp_path / "other"), "--pair-caption", "other"]) == 0
    same, other = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("same", "other"))
    assert not torch.equal(same["logit_scale"], other["logit_scale"])


def test_checkpoints_record_recipe_and_home_paths_portably():
    cfg = TrainConfig(split=[str(RECIPE_DIR.resolve() / "flickr8k-extra-splits.json") + ":train", "all"],
                      cache_dir=str(Path.home() / ".cache" / "x"), data=["../shared/data/a.txt"])
    rec = portable_record(cfg)
    assert rec["split"] == ["${recipes}/flickr8k-extra-splits.json:train", "all"]
    assert rec["cache_dir"] == "~/.cache/x" and rec["data"] == ["../shared/data/a.txt"]
    assert config_from_record(rec) == cfg  # and back, as training on this machine needs them
    assert config_from_record({**rec, "from_a_newer_version": 1}) == cfg


def test_train_help_gives_the_defaults_training_uses():
    """Train flags default to None (a recipe or --config must not be overridden), so their help states the
    default by hand: it must be TrainConfig's."""
    import dataclasses
    import re

    from edge_gcl.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    checked = 0
    for action in train._actions:
        value = defaults.get(action.dest)
        if value is None or isinstance(value, bool) or not action.option_strings or action.dest == "recipe":
            continue
        said = re.search(r"default: ([^;),]+)", action.help or "")
        assert said, f"{action.option_strings[0]}: its help does not give the default {value!r}"
        if isinstance(value, (int, float)):
            assert float(said.group(1)) == float(value), (action.option_strings[0], said.group(1), value)
        else:
            assert str(Path(said.group(1)).expanduser()) == value or said.group(1) == value, (action.dest, said.group(1))
        checked += 1
    assert checked >= 15


def test_a_stem_cache_too_big_for_memory_is_refused_before_it_is_computed(data, tmp_path, monkeypatch, capsys):
    import edge_gcl.train.stems

    monkeypatch.setattr(edge_gcl.train.stems, "available_memory_bytes", lambda: 1_000_000)  # 1 MB free
    _refused(capsys, "the lite stem cache of 25 photos x 2 views needs",
             lambda: _train(data, tmp_path / "big", tmp_path / "cache", "--steps", "1"))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_fewer_photos_than_a_batch_is_one_line(data, tmp_path, capsys):
    """A batch holds distinct photos, the same number on every rank: 24 photos cannot make a batch of 32."""
    capsys.readouterr()
    assert _train(data, tmp_path / "small", tmp_path / "cache", "--steps", "1", "--batch-size", "32") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "edge-gcl: error: --batch-size 32: only 24 training photos"), err
