from __future__ import annotations

import json

import pytest
from PIL import Image

from edge_gcl.data import read_pairs, read_split


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        Image.new("RGB", (8, 8)).save(folder / name)
    return folder


def test_flickr_groups_captions_and_counts_bad_rows(tmp_path, images):
    f = tmp_path / "captions.txt"
    f.write_text('image,caption\na.jpg,"A dog, running."\na.jpg,second\nb.jpg,  \nmissing.jpg,x\n,orphan\nb.jpg,ok\n')
    pairs = read_pairs(f)
    assert [p.name for p in pairs.images] == ["a.jpg", "b.jpg"]
    assert pairs.captions == [["A dog, running.", "second"], ["ok"]]
    assert pairs.skipped == {"empty caption": 1, "missing image file": 1, "no image name": 1}


def test_coco_and_llava_layouts(tmp_path, images):
    coco = tmp_path / "captions_train2017.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "nope.jpg"}],
        "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"},
                        {"image_id": 2, "caption": "z"}, {"image_id": 9, "caption": "w"}],
    }))
    pairs = read_pairs(coco, images)
    assert pairs.captions == [["x", "y"]] and pairs.skipped == {"missing image file": 1, "no image name": 1}

    llava = tmp_path / "blip_laion_cc_sbu_558k.json"
    llava.write_text(json.dumps([
        {"id": "1", "image": "sub/c.jpg", "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                                             {"from": "gpt", "value": "a cat on a sofa"}]},
        {"id": "2", "image": "b.jpg", "conversations": [{"from": "human", "value": "<image>"}]},
    ]))
    pairs = read_pairs(llava, images)
    assert [p.name for p in pairs.images] == ["c.jpg"] and pairs.captions == [["a cat on a sofa"]]
    assert pairs.skipped == {"empty caption": 1}


def test_bad_files_are_named(tmp_path, images):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_pairs(bad, images)
    csv = tmp_path / "wrong.txt"
    csv.write_text("file,text\na.jpg,x\n")
    with pytest.raises(ValueError, match="wrong.txt: expected a CSV header"):
        read_pairs(csv)
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_pairs(tmp_path / "absent.txt")
    splits = tmp_path / "splits.json"
    splits.write_text('{"train": ["a.jpg"]}')
    assert read_split(splits, "train") == {"a.jpg"}
    with pytest.raises(KeyError, match="no split 'dev'"):
        read_split(splits, "dev")


def test_shared_flickr_reads(flickr):
    pairs = read_pairs(flickr / "captions.txt")
    assert len(pairs) == 800 and all(len(c) == 5 for c in pairs.captions)
    train = pairs.subset(read_split(flickr / "splits.json", "train"))
    assert len(train) == 700
