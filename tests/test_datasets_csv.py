import random
from collections import Counter

import pytest
from PIL import Image

from neural.common import EMOTIONS
from pipelines.datasets import DatasetError, get_dataset


def _images(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / name)


def _write(path, header, rows):
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    return path


def test_labels_paths_ids_and_assigned_splits(tmp_path):
    names = [f"imgs/{e}_{k}.png" for e in EMOTIONS for k in range(4)]
    _images(tmp_path, names)
    rows = [(n, n.split("/")[1].split("_")[0].upper()) for n in names] + [("imgs/gone.png", "happy"), ("./imgs/x.png", "joyful")]
    ds = get_dataset("csv", path=_write(tmp_path / "labels.csv", "image_path,label", rows))
    assert ds.name == "labels" and len(ds) == 28
    assert ds["imgs/sad_2.png"].label == EMOTIONS.index("sad")
    assert ds["imgs/sad_2.png"].image_path == tmp_path / "imgs/sad_2.png"
    assert dict(ds.skipped) == {
        "imgs/gone.png": f"image missing: {tmp_path / 'imgs/gone.png'}",
        "imgs/x.png": "label outside vocabulary: 'joyful' is not one of angry, disgust, fear, happy, sad, surprise, neutral and no mapping file was given",
    }
    per_class = Counter((s.label, s.split) for s in ds)
    assert all(per_class[(i, "pretrain")] in (1, 2) for i in range(7))  # 0.35 * 4 = 1.4, stratified


def test_assigned_splits_do_not_depend_on_row_order(tmp_path):
    names = [f"a/{i:02d}.jpg" for i in range(30)]
    _images(tmp_path, names)
    rows = [(n, EMOTIONS[i % 3]) for i, n in enumerate(names)]
    first = {s.sample_id: s.split for s in get_dataset("csv", path=_write(tmp_path / "one.csv", "image_path,label", rows))}
    random.Random(0).shuffle(rows)
    second = {s.sample_id: s.split for s in get_dataset("csv", path=_write(tmp_path / "two.csv", "image_path,label", rows))}
    assert first == second


def test_split_column_mapping_and_extra_columns(tmp_path):
    _images(tmp_path / "data", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    rows = [("a.jpg", "amusement", "train", "x"), ("b.jpg", "Awe", "test", "y"), ("c.jpg", "sad", "val", "z"), ("d.jpg", "nostalgia", "train", "w")]
    path = _write(tmp_path / "split.csv", "image_path,label,split,source", rows)
    ds = get_dataset("csv", path=path, root=tmp_path / "data", mapping="emoset_to_basic")
    assert [(s.sample_id, s.label_name, s.split) for s in ds] == [("a.jpg", "happy", "train"), ("b.jpg", "surprise", "test"), ("c.jpg", "sad", "val")]
    assert ds["b.jpg"].annotations == {"original_label": "Awe", "source": "y"}
    assert ds.skipped == [("d.jpg", "label outside vocabulary: 'nostalgia' is not one of angry, disgust, fear, happy, sad, surprise, neutral not in the mapping")]
    assert ds.split_names == ("train", "test", "val")
    with pytest.raises(DatasetError, match="has a split column; split_fractions would be ignored"):
        get_dataset("csv", path=path, split_fractions={"train": 1.0})


def test_strict_mode_raises_listing_the_vocabulary(tmp_path):
    _images(tmp_path, ["a.jpg"])
    path = _write(tmp_path / "l.csv", "image_path,label", [("a.jpg", "happy"), ("a2.jpg", "joy")])
    with pytest.raises(DatasetError, match=":3: label 'joy' is not one of the emotions \\(angry, disgust.*give mapping=FILE"):
        get_dataset("csv", path=path, strict=True)


def test_duplicates_absolute_paths_and_empty_fields(tmp_path):
    _images(tmp_path, ["a.jpg", "b.jpg"])
    rows = [("a.jpg", "happy"), (str(tmp_path / "b.jpg"), "sad"), ("./a.jpg", "angry"), ("", "sad"), ("c.jpg", "")]
    ds = get_dataset("csv", path=_write(tmp_path / "l.csv", "image_path,label", rows))
    assert [s.sample_id for s in ds] == ["a.jpg", "b.jpg"]  # absolute path under the CSV's folder -> relative id
    assert ds.skipped == [
        ("a.jpg", "duplicate image: line 4 repeats the image of line 2"),
        ("line-5", "bad row: empty image_path on line 5"),
        ("c.jpg", "no label: empty label"),
    ]


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(DatasetError, match="needs path=FILE"):
        get_dataset("csv")
    with pytest.raises(DatasetError, match="CSV data set .*nope.csv not found"):
        get_dataset("csv", path=tmp_path / "nope.csv")
    bad = _write(tmp_path / "bad.csv", "path,emotion", [("a.jpg", "happy")])
    with pytest.raises(DatasetError, match="header lacks column\\(s\\) image_path, label; found path, emotion"):
        get_dataset("csv", path=bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        get_dataset("csv", path=empty)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x89PNG")
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        get_dataset("csv", path=binary)
