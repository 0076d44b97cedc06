"""The synthetic MELD-like clip generator: layout, labels, polarity table, determinism, decoding, tones."""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from neural.common import EMOTIONS, SENTIMENTS, UserError
from pipelines.datasets.synthetic_clips import TRUTH_FILE, generate_clips, read_truth, render_clip
from pipelines.datasets.synthetic_clips_config import (
    DEFAULT_POLARITY_TABLE,
    EMOTION_WORDS,
    FILLERS,
    MELD_COLUMNS,
    MELD_EMOTION_LABELS,
    MELD_SPLITS,
    SENTIMENT_PHRASES,
    SyntheticClipsConfig,
)
from pipelines.datasets.synthetic_clips_plan import empirical_polarity_table, plan_clips, polarity_table_error
from pipelines.datasets.synthetic_clips_draw import (
    TONES,
    decode_clip,
    expression_weights,
    render_face_frames,
    synth_tone,
    tone_features,
    video_codec,
)

SMALL = SyntheticClipsConfig(n_clips=24, seed=3)

#: Labels, texts and tones need no PyAV; writing and reading MP4 does.
needs_av = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="writing clips needs PyAV: pip install av")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate_clips(tmp_path_factory.mktemp("clips"), SMALL)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree(root):
    """{relative path: (size, mtime_ns)} of every file under root."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------- layout and labels


@needs_av
def test_meld_layout_columns_and_labels_follow_truth(small_set):
    names = {p.name for p in small_set.iterdir()}
    assert names == {TRUTH_FILE} | {n for pair in MELD_SPLITS.values() for n in pair}
    truth = read_truth(small_set)
    by_key = {(c["split"], c["dialogue_id"], c["utterance_id"]): c for c in truth["clips"]}
    assert len(by_key) == len(truth["clips"]) == SMALL.n_clips
    seen = 0
    for split, (csv_name, clip_dir) in MELD_SPLITS.items():
        frame = pd.read_csv(small_set / csv_name)  # what a pandas-based MELD reader does
        assert tuple(frame.columns) == MELD_COLUMNS
        rows = _read_csv(small_set / csv_name)
        assert [int(r["Sr No."]) for r in rows] == list(range(1, len(rows) + 1))
        assert {p.name for p in (small_set / clip_dir).iterdir()} == {
            f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4" for r in rows
        }
        for r in rows:
            clip = by_key[(split, int(r["Dialogue_ID"]), int(r["Utterance_ID"]))]
            assert r["Emotion"] == MELD_EMOTION_LABELS[clip["emotion"]] == clip["meld_emotion"]
            assert r["Sentiment"] == clip["sentiment"] and r["Sentiment"] in SENTIMENTS
            assert r["Utterance"] == clip["utterance"] and r["Utterance"].strip()
            assert r["Speaker"] == clip["speaker"]
            assert clip["file"] == f"{clip_dir}/dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4"
            assert r["StartTime"] < r["EndTime"] and len(r["StartTime"]) == len("00:16:16,059")
            assert int(r["Season"]) >= 1 and int(r["Episode"]) >= 1
            seen += 1
        # Dialogue_IDs restart at 0 per split and utterances count from 0 within a dialogue
        dias = sorted({int(r["Dialogue_ID"]) for r in rows})
        assert dias == list(range(len(dias)))
        for d in dias:
            utts = [int(r["Utterance_ID"]) for r in rows if int(r["Dialogue_ID"]) == d]
            assert utts == list(range(len(utts)))
    assert seen == SMALL.n_clips
    assert set(MELD_EMOTION_LABELS.values()) == {"neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"}
    assert truth["polarity_table"] == DEFAULT_POLARITY_TABLE
    assert truth["config"] == SMALL.to_dict()
    assert truth["encoding"]["video_codec"] == video_codec()


def test_default_polarity_table_is_documented_shape():
    assert list(DEFAULT_POLARITY_TABLE) == list(EMOTIONS)
    for row in DEFAULT_POLARITY_TABLE.values():
        assert list(row) == list(SENTIMENTS) and abs(sum(row.values()) - 1) < 1e-9
        assert 0 < min(row.values()) and max(row.values()) < 1  # something to estimate everywhere
    top = {e: max(row, key=row.get) for e, row in DEFAULT_POLARITY_TABLE.items()}
    assert top["happy"] == "positive" and top["neutral"] == "neutral"
    assert all(top[e] == "negative" for e in ("angry", "disgust", "fear", "sad"))
    surprise = DEFAULT_POLARITY_TABLE["surprise"]
    assert surprise["positive"] >= 0.3 and surprise["negative"] >= 0.3


def test_stratified_labels_match_the_table_in_every_split():
    plans = plan_clips(SyntheticClipsConfig(n_clips=420, seed=1))
    assert Counter(p.split for p in plans) == {"train": 294, "dev": 42, "test": 84}
    for split in MELD_SPLITS:
        mine = [p for p in plans if p.split == split]
        counts = Counter(p.emotion for p in mine)
        assert max(counts.values()) - min(counts.values()) <= 1  # uniform prior, quota draw
        table = empirical_polarity_table(mine)
        for e in EMOTIONS:
            for s in SENTIMENTS:  # each count within one of n_e * P(s | e)
                assert abs(table[e][s] - DEFAULT_POLARITY_TABLE[e][s]) <= 1 / counts[e] + 1e-9
    assert polarity_table_error(empirical_polarity_table([p for p in plans if p.split == "train"]),
                                DEFAULT_POLARITY_TABLE) < 0.03


def test_iid_labels_are_close_to_the_table_and_the_prior():
    prior = {"angry": 0.1, "disgust": 0.05, "fear": 0.1, "happy": 0.2, "sad": 0.15, "surprise": 0.1, "neutral": 0.3}
    plans = plan_clips(SyntheticClipsConfig(n_clips=3000, seed=2, label_sampling="iid", emotion_prior=prior))
    counts = Counter(p.emotion for p in plans)
    assert all(abs(counts[e] / len(plans) - prior[e]) < 0.03 for e in EMOTIONS)
    assert polarity_table_error(empirical_polarity_table(plans), DEFAULT_POLARITY_TABLE) < 0.08


def test_cues_follow_the_labels_and_their_probabilities():
    cfg = SyntheticClipsConfig(n_clips=2000, seed=4, p_emotion_word=0.6, p_sentiment_word=0.3, face_confusion=0.2)
    plans = plan_clips(cfg)
    n = len(plans)
    words = [p for p in plans if p.emotion_word is not None]
    phrases = [p for p in plans if p.sentiment_phrase is not None]
    assert abs(len(words) / n - 0.6) < 0.04 and abs(len(phrases) / n - 0.3) < 0.04
    assert all(p.emotion_word in EMOTION_WORDS[p.emotion] and p.emotion_word in p.utterance for p in words)
    assert all(p.sentiment_phrase in SENTIMENT_PHRASES[p.sentiment] and p.sentiment_phrase in p.utterance
               for p in phrases)
    # no cue is a label leak: an emotion word never states a sentiment and a phrase never names an emotion
    all_words = {w for ws in EMOTION_WORDS.values() for w in ws}
    for p in plans:
        if p.emotion_word is None:
            assert not any(f" {w} " in f" {p.utterance.rstrip('.')} " for w in all_words)
        if p.sentiment_phrase is None:
            assert not any(ph in p.utterance for phs in SENTIMENT_PHRASES.values() for ph in phs)
    # the sentiment cue is independent of the emotion: same rate for every emotion (within noise)
    for e in EMOTIONS:
        mine = [p for p in plans if p.emotion == e]
        assert abs(sum(p.sentiment_phrase is not None for p in mine) / len(mine) - 0.3) < 0.1
    assert abs(sum(p.face_expression != p.emotion for p in plans) / n - 0.2) < 0.04
    assert all(p.utterance.strip() for p in plans)


def test_no_cue_gives_a_filler_never_an_empty_utterance():
    plans = plan_clips(SyntheticClipsConfig(n_clips=50, p_emotion_word=0.0, p_sentiment_word=0.0))
    assert all(p.utterance in FILLERS for p in plans)


# --------------------------------------------------------------------------- determinism, resume, refusal


@needs_av
def test_same_seed_same_set(small_set, tmp_path):
    again = generate_clips(tmp_path / "again", SMALL)
    for name in [TRUTH_FILE] + [csv_name for csv_name, _ in MELD_SPLITS.values()]:
        assert (again / name).read_bytes() == (small_set / name).read_bytes()
    for clip in read_truth(small_set)["clips"][:3]:
        v1, a1, _ = decode_clip(small_set / clip["file"])
        v2, a2, _ = decode_clip(again / clip["file"])
        assert np.array_equal(v1, v2) and np.array_equal(a1, a2)
    other = plan_clips(dataclasses.replace(SMALL, seed=4))
    assert [p.truth() for p in other] != read_truth(small_set)["clips"]


@needs_av
def test_rerun_is_a_no_op_and_an_interrupted_set_resumes(small_set, tmp_path):
    before = _tree(small_set)
    generate_clips(small_set, SMALL)
    assert _tree(small_set) == before  # nothing rewritten

    root = generate_clips(tmp_path / "resume", SMALL)
    complete = {name: (root / name).read_bytes() for name in _tree(root)}
    clip = read_truth(root)["clips"][5]["file"]
    (root / clip).unlink()
    (root / "dev_sent_emo.csv").unlink()
    kept = (root / "train_sent_emo.csv").stat().st_mtime_ns
    generate_clips(root, SMALL)
    assert set(_tree(root)) == set(complete)
    assert (root / "dev_sent_emo.csv").read_bytes() == complete["dev_sent_emo.csv"]
    assert (root / "train_sent_emo.csv").stat().st_mtime_ns == kept
    v1, a1, _ = decode_clip(root / clip)
    v2, a2, _ = decode_clip(complete[clip])
    assert np.array_equal(v1, v2) and np.array_equal(a1, a2)


@needs_av
def test_another_config_or_foreign_data_is_refused(small_set, tmp_path):
    with pytest.raises(UserError, match=r"another config.*n_clips: on disk 24, requested 25"):
        generate_clips(small_set, dataclasses.replace(SMALL, n_clips=25))
    table = json.loads(json.dumps(DEFAULT_POLARITY_TABLE))
    table["surprise"] = {"negative": 0.5, "neutral": 0.0, "positive": 0.5}
    with pytest.raises(UserError, match="polarity_table"):
        generate_clips(small_set, dataclasses.replace(SMALL, polarity_table=table))
    meld = tmp_path / "real_meld"
    meld.mkdir()
    (meld / "train_sent_emo.csv").write_text(",".join(MELD_COLUMNS) + "\n")
    with pytest.raises(UserError, match="no truth.json"):
        generate_clips(meld, SMALL)
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / TRUTH_FILE).write_text(json.dumps({"generator_version": 0, "config": {}}))
    with pytest.raises(UserError, match="generator version 0"):
        generate_clips(stale, SMALL)


@pytest.mark.parametrize("bad", [
    {"n_clips": 0},
    {"frame_size": 63},
    {"sample_rate": 12345},
    {"split_fractions": {"train": 0.5, "val": 0.5}},
    {"emotion_prior": {"happy": 1.0}},
    {"polarity_table": {**DEFAULT_POLARITY_TABLE, "sad": {"negative": 0.9, "neutral": 0.2, "positive": 0.0}}},
    {"label_sampling": "random"},
    {"p_sentiment_word": 1.5},
    {"expression_intensity": (0.0, 1.0)},
])
def test_bad_config_is_a_one_line_user_error(bad):
    with pytest.raises(UserError) as info:
        SyntheticClipsConfig(**bad)
    assert "\n" not in str(info.value) and next(iter(bad)) in str(info.value)


def test_config_round_trips_and_unknown_options_are_refused():
    cfg = SyntheticClipsConfig(n_clips=7, expression_intensity=[0.5, 0.9])
    assert SyntheticClipsConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserError, match="n_clip"):
        SyntheticClipsConfig.from_dict({"n_clip": 3})


# --------------------------------------------------------------------------- clips


@needs_av
def test_a_clip_decodes_to_its_frames_and_audible_audio(small_set):
    truth = read_truth(small_set)
    clip = truth["clips"][0]
    path = small_set / clip["file"]
    import av

    with av.open(str(path)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
    assert kinds == {"video": "h264" if video_codec() == "libx264" else "mpeg4", "audio": "aac"}
    video, audio, rate = decode_clip(path)
    assert video.shape == (SMALL.frames, SMALL.frame_size, SMALL.frame_size, 3) and video.dtype == np.uint8
    assert rate == SMALL.sample_rate
    n = SMALL.duration_s * rate
    assert n <= len(audio) <= n + 2048  # AAC pads to whole 1024-sample frames
    assert np.sqrt(np.mean(audio**2)) > 0.02
    assert video.std() > 10  # a picture, not a flat frame


def test_the_face_moves_from_neutral_to_the_expression():
    rng = np.random.default_rng(0)
    w = expression_weights(8, 0.8, rng)
    assert w[0] == 0 and abs(w[-1] - 0.8) < 1e-9 and np.all(np.diff(w) >= 0)

    # same stream: same person, place, drift and noise; only the expression differs
    neutral = render_face_frames("neutral", 1.0, 8, 64, 4.0, np.random.default_rng(1)).astype(float)
    for expression in ("happy", "angry", "surprise"):
        frames = render_face_frames(expression, 1.0, 8, 64, 4.0, np.random.default_rng(1)).astype(float)
        assert np.array_equal(frames[0], neutral[0])  # every clip starts neutral
        change = np.abs(frames - neutral).mean(axis=(1, 2, 3))  # [8]
        assert change[-1] > 0.5 and change[-1] >= change[len(change) // 2] >= change[0] == 0


def test_tone_pitch_and_energy_follow_the_table():
    rate, seconds = 16000, 1.0
    measured = {}
    for e, spec in TONES.items():
        wave = synth_tone(spec.f0_hz, spec.level, spec, seconds, rate, 0.0, np.random.default_rng(0))
        assert wave.dtype == np.float32 and len(wave) == rate
        pitch, rms = tone_features(wave, rate)
        low = spec.f0_hz * min(1.0, spec.glide) * (1 - spec.vibrato) - 5
        high = spec.f0_hz * max(1.0, spec.glide) * (1 + spec.vibrato) + 5
        assert low <= pitch <= high, e
        measured[e] = rms
    # energy follows the level column: louder spec, louder tone
    assert sorted(TONES, key=lambda e: TONES[e].level) == sorted(measured, key=measured.get)
    # the documented extremes
    assert TONES["angry"].level == max(t.level for t in TONES.values())
    assert TONES["sad"].level == min(t.level for t in TONES.values())
    assert TONES["sad"].f0_hz == min(t.f0_hz for t in TONES.values())
    assert TONES["angry"].f0_hz > TONES["neutral"].f0_hz > TONES["sad"].f0_hz


@needs_av
def test_decoded_audio_keeps_the_emotions_apart():
    """Through AAC and the random jitter, angry clips are still higher and louder than sad ones on average."""
    cfg = SyntheticClipsConfig(n_clips=60, seed=5)
    plans = plan_clips(cfg)
    feats = {"angry": [], "sad": []}
    for plan in plans:
        if plan.emotion in feats and len(feats[plan.emotion]) < 3:
            _, audio, rate = decode_clip(render_clip(plan, cfg))
            feats[plan.emotion].append(tone_features(audio, rate))
    angry, sad = np.mean(feats["angry"], axis=0), np.mean(feats["sad"], axis=0)
    assert angry[0] > 1.5 * sad[0] and angry[1] > 2 * sad[1]

