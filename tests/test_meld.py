"""The ``meld`` data set: published CSV layout -> clip samples, mapping, splits, bad rows."""
from __future__ import annotations

import csv
import random
import shutil

import pytest
from clip_helpers import TRAIN_EMOTIONS, row, write_clip, write_csv, write_meld

from neural.common import EMOTIONS, SENTIMENTS
from pipelines.datasets import DatasetError, get_dataset, list_datasets


@pytest.fixture(scope="module")
def meld_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("meld")
    return root, write_meld(root)


def test_layout_to_samples(meld_root):
    root, cases = meld_root
    ds = get_dataset("meld", root=root)
    assert "meld" in list_datasets() and ds.modality == "clip"
    assert ds.split_names == ("pretrain", "train", "val", "test")
    good = {sid for sid, what in cases.items() if what in ("good", "no audio", "corrupt", "empty utterance")}
    assert {s.sample_id for s in ds} == good  # bad clips and empty text are the pipeline's to judge

    s = ds["dev/dia0_utt0"]
    assert s.path == s.image_path == root / "dev_splits_complete" / "dia0_utt0.mp4"
    assert s.split == "val" and s.label == EMOTIONS.index("happy")  # joy -> happy
    ann = s.annotations
    assert ann["utterance"] == "Utterance 0-0, how you doin'?" and ann["speaker"] == "Chandler"
    assert ann["sentiment"] == SENTIMENTS.index("positive") and ann["sentiment_name"] == "positive"
    assert (ann["dialogue_id"], ann["utterance_id"], ann["meld_part"]) == (0, 0, "dev")
    assert ann["original_emotion"] == "joy" and ann["StartTime"] == "00:00:01,000" and ann["Season"] == "1"
    assert {s.split for s in ds.by_split("test")} == {"test"} and len(ds.by_split("test")) == 2
    assert ds.sentiment_counts("val") == {"negative": 1, "neutral": 0, "positive": 1}


def test_meld_emotions_map_through_the_shipped_table(meld_root):
    root, _ = meld_root
    ds = get_dataset("meld", root=root)
    want = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry",
            "surprise": "surprise", "fear": "fear", "disgust": "disgust"}
    for k, emotion in enumerate(TRAIN_EMOTIONS):
        assert ds[f"train/dia{k}_utt0"].label_name == want[emotion]


def test_bad_rows_are_skipped_with_reasons(meld_root):
    root, _ = meld_root
    reasons = dict(get_dataset("meld", root=root).skipped)
    assert reasons["train/dia20_utt0"].startswith("clip missing: ") and "train_splits/dia20_utt0.mp4" in reasons["train/dia20_utt0"]
    assert reasons["train/dia21_utt0"].startswith("label outside vocabulary: 'excited'")
    (bad_id,) = [sid for sid in reasons if sid.startswith("train/line-")]
    assert reasons[bad_id].startswith("bad row: Dialogue_ID 'x'")


def test_train_splits_are_stratified_and_stable_under_row_order(tmp_path, meld_root):
    root, _ = meld_root
    ds = get_dataset("meld", root=root)
    train = [s for s in ds if s.annotations["meld_part"] == "train"]
    for emotion in set(EMOTIONS) - {"neutral"}:  # two clips per emotion: one on each side
        assert sorted(s.split for s in train if s.label_name == emotion) == ["pretrain", "train"]

    # the same data with shuffled rows (and another root) gives the same splits
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with open(copy / "train_sent_emo.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(1).shuffle(rows)
    write_csv(copy / "train_sent_emo.csv", rows)
    again = get_dataset("meld", root=copy)
    assert {s.sample_id: s.split for s in again} == {s.sample_id: s.split for s in ds}
    assert {s.sample_id: s.split for s in get_dataset("meld", root=root, seed=0)} == {s.sample_id: s.split for s in ds}
    everything = get_dataset("meld", root=root, pretrain_fraction=0.0)
    assert not everything.by_split("pretrain") and len(everything.by_split("train")) == len(train)


def test_parts_and_mapping_options(tmp_path, meld_root):
    root, _ = meld_root
    dev = get_dataset("meld", root=root, parts=["dev"])
    assert dev.split_names == ("val",) and len(dev) == 2

    mapping = tmp_path / "no_disgust.csv"
    mapping.write_text("label,emotion\nneutral,neutral\njoy,happy\nsadness,sad\nanger,angry\n"
                       "surprise,surprise\nfear,fear\ndisgust,\n")
    ds = get_dataset("meld", root=root, mapping=mapping)
    reasons = dict(ds.skipped)
    k = TRAIN_EMOTIONS.index("disgust")
    assert reasons[f"train/dia{k}_utt0"].startswith("label excluded by mapping: 'disgust'")


def test_user_errors_are_one_clear_line(tmp_path, meld_root):
    root, _ = meld_root
    cases = [
        ({}, "needs root=DIR"),
        ({"root": tmp_path / "nowhere"}, "does not exist"),
        ({"root": root, "parts": ["validation"]}, "parts are train, dev, test"),
        ({"root": root, "pretrain_fraction": 1.5}, "pretrain_fraction must be in [0, 1]"),
        ({"root": root, "colour": 1}, "unknown option(s) colour"),
    ]
    for options, text in cases:
        with pytest.raises(DatasetError) as err:
            get_dataset("meld", **options)
        assert text in str(err.value) and "\n" not in str(err.value)

    partial = tmp_path / "partial"
    write_csv(partial / "dev_sent_emo.csv", [row(0, 0)])
    with pytest.raises(DatasetError, match="lacks train_sent_emo.csv, test_sent_emo.csv"):
        get_dataset("meld", root=partial)
    with pytest.raises(DatasetError, match=r"clip folder dev_splits_complete/ not found"):
        get_dataset("meld", root=partial, parts=["dev"])
    # the archive layout one level down is found too
    write_clip(partial / "dev" / "dev_splits_complete" / "dia0_utt0.mp4", n_frames=2)
    assert get_dataset("meld", root=partial, parts=["dev"])["dev/dia0_utt0"].split == "val"

    (partial / "dev_sent_emo.csv").write_text("Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\nHi,Ross,joy,0,0\n")
    with pytest.raises(DatasetError, match="lacks column"):
        get_dataset("meld", root=partial, parts=["dev"])
