import dataclasses
import json
from pathlib import Path

import pytest

from neural.common import EMOTIONS, UserError
from pipelines.datasets import Dataset, DatasetError, Sample, get_dataset, list_datasets, load_mapping, register_dataset
from pipelines.datasets.base import MAPPINGS_DIR, dataset_options, resolve_label


def _sample(sid, label=0, split="train", **ann):
    return Sample(sid, Path(f"/img/{sid}.png"), label, split, ann)


def test_sample_is_frozen_and_names_its_label():
    s = _sample("a", label=EMOTIONS.index("sad"), faces=2)
    assert s.label_name == "sad"
    assert json.dumps(s.annotations) == '{"faces": 2}'
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.label = 1


def test_dataset_lookup_by_id_and_split():
    ds = Dataset("toy", [_sample("a", 0, "train"), _sample("b", 3, "test"), _sample("c", 3, "train")], split_names=("train", "val", "test"))
    assert ds["b"].label == 3 and "c" in ds and "z" not in ds
    assert [s.sample_id for s in ds.by_split("train")] == ["a", "c"]
    assert ds.by_split("val") == []  # declared but empty
    with pytest.raises(DatasetError, match="no split 'dev'; its splits: train, val, test"):
        ds.by_split("dev")
    with pytest.raises(KeyError, match="no sample with id 'z'"):
        ds["z"]


def test_duplicate_sample_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate sample id 'a'"):
        Dataset("toy", [_sample("a"), _sample("a")])


def test_describe_counts_per_split_and_class_and_reports_skips(tmp_path):
    ds = Dataset(
        "toy",
        [_sample("a", 0, "train"), _sample("b", 3, "test"), _sample("c", 3, "train"), _sample("d", None, "test")],
        skipped=[("x", "image missing: /x.png"), ("y", "image missing: /y.png"), ("z", "label outside vocabulary: 'joy'")],
        notes=["download with: fetch-images"],
    )
    text = ds.describe()
    lines = text.splitlines()
    assert lines[1].split() == [*EMOTIONS, "unlabelled", "total"]
    assert lines[2].split() == ["train", "1", "0", "0", "1", "0", "0", "0", "0", "2"]
    assert lines[3].split() == ["test", "0", "0", "0", "1", "0", "0", "0", "1", "2"]
    assert lines[4].split() == ["total", "1", "0", "0", "2", "0", "0", "0", "1", "4"]
    assert "skipped 3 (image missing: 2, label outside vocabulary: 1)" in text
    assert "download with: fetch-images" in text
    assert ds.class_counts("test")["happy"] == 1
    report = ds.skip_report(limit=1)
    assert "x: image missing: /x.png" in report and "y: image" not in report and "2 more" in report
    out = ds.write_skip_report(tmp_path / "skips.csv")
    assert out.read_text().splitlines() == ["sample_id,reason", "x,image missing: /x.png", "y,image missing: /y.png", "z,label outside vocabulary: 'joy'"]


def test_registry_lists_builtins_and_rejects_unknown_names_and_options():
    assert {"synthetic", "findingemo", "csv"} <= set(list_datasets())
    with pytest.raises(UserError, match="unknown data set 'emoset'; known data sets: afewva, csv, findingemo, meld, "):
        get_dataset("emoset")
    with pytest.raises(UserError, match="unknown option\\(s\\) csv_path for data set 'csv'; known options: path"):
        get_dataset("csv", csv_path="x.csv")
    assert "images" in dataset_options("findingemo")


def test_register_a_custom_dataset():
    @register_dataset("toy-for-test")
    def toy(n: int = 2):
        return Dataset("toy-for-test", [_sample(f"t{i}") for i in range(n)])

    assert len(get_dataset("toy-for-test", n=3)) == 3
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy-for-test")(lambda: None)


def test_shipped_mappings_load_and_cover_plutchik():
    fe = load_mapping("findingemo_to_basic")
    plutchik = (
        "serenity joy ecstasy acceptance trust admiration apprehension fear terror distraction surprise amazement "
        "pensiveness sadness grief boredom disgust loathing annoyance anger rage interest anticipation vigilance"
    ).split()
    assert sorted(fe) == sorted(plutchik)
    assert fe["rage"] == "angry" and fe["grief"] == "sad" and fe["interest"] == "neutral"
    assert set(fe.values()) == set(EMOTIONS)
    assert load_mapping(MAPPINGS_DIR / "emoset_to_basic.csv")["amusement"] == "happy"


@pytest.mark.parametrize(
    "text, match",
    [
        ("source,target\njoy,happy\n", "header must be 'label,emotion'"),
        ("label,emotion\njoy,happyish\n", ":2: 'happyish' is not an emotion; the vocabulary is: angry"),
        ("# c\nlabel,emotion\njoy,happy\nJoy,sad\n", ":4: label 'Joy' is mapped twice"),
        ("# only a comment\n", "empty mapping file"),
    ],
)
def test_bad_mapping_files_are_user_errors(tmp_path, text, match):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=match):
        load_mapping(path)


def test_missing_mapping_file_lists_shipped_ones():
    with pytest.raises(DatasetError, match="not found \\(shipped mappings: emoset_to_basic, findingemo_to_basic"):
        load_mapping("no_such_mapping")


def test_resolve_label():
    table = {"joy": "happy", "boredom": None}
    assert resolve_label("Joy", table) == (EMOTIONS.index("happy"), None)
    assert resolve_label(" SAD ", table) == (EMOTIONS.index("sad"), None)
    assert resolve_label("boredom", table)[1].startswith("label excluded by mapping")
    assert resolve_label("awe", table)[1].startswith("label outside vocabulary: 'awe'")
    assert resolve_label("awe", None)[1].endswith("and no mapping file was given")
    assert resolve_label("", table)[1].startswith("no label")
