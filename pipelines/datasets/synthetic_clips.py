"""Synthetic multimodal clips in MELD's layout, with a known polarity table.

What it is for: the default run and the tests of the multimodal (video + audio
+ text -> emotion, sentiment) part of emologic, where MELD cannot be shipped.
Its one known answer is the **polarity table** P(sentiment | emotion)
(:data:`~pipelines.datasets.synthetic_clips_config.DEFAULT_POLARITY_TABLE`): a program that learns such a table can be
checked against it.

How a clip is made (all randomness from ``(seed, split, dialogue, utterance)``
streams, so the labels and texts never depend on rendering):

1. **Labels.** Each split gets its share of the clips; the emotions follow
   ``emotion_prior`` and each clip's sentiment is drawn from the polarity table's
   row of the clip's *true* emotion -- nothing else. With ``label_sampling =
   "stratified"`` (default) the draw is a quota draw: within every (split,
   emotion) the sentiment counts are the table's proportions rounded (largest
   remainder, random tie-break) and the order is shuffled, so the empirical table
   of every split is as close to the true one as its counts allow and a short
   training run can recover it within a small tolerance. ``"iid"`` draws every
   label independently instead.
2. **Emotion evidence** (independent of the sentiment given the emotion): the
   face's expression (the true emotion, or with probability ``face_confusion``
   another one), the tone's pitch and energy (:data:`~pipelines.datasets.
   synthetic_clips_draw.TONES`, jittered), and with probability
   ``p_emotion_word`` an emotion word in the sentence (``EMOTION_WORDS``).
3. **Direct sentiment evidence:** with probability ``p_sentiment_word`` the
   sentence carries a phrase of the clip's sentiment (``SENTIMENT_PHRASES``),
   so a sentiment head reading the clip is informative but imperfect. A sentence
   with neither cue is a neutral filler line; an utterance is never empty.
4. **Dialogues.** Within a split the shuffled clips are cut into dialogues of 1
   to ``max_utterances`` utterances between two speakers, with a season, an
   episode and consecutive start/end times, as in MELD.

On disk, exactly MELD's layout (so the MELD reader needs no special case)::

    root/train_sent_emo.csv  dev_sent_emo.csv  test_sent_emo.csv
    root/train_splits/dia{D}_utt{U}.mp4
    root/dev_splits_complete/dia{D}_utt{U}.mp4
    root/output_repeated_splits_test/dia{D}_utt{U}.mp4
    root/truth.json

The CSVs have MELD's columns and label strings (``joy``, ``sadness``,
``anger``, ...); Dialogue_IDs restart at 0 in every split, Sr No. is 1-based per
file. ``truth.json`` is written first (config, polarity table, every clip's
labels and cues), the clips next, the CSVs last; generation resumes where it
stopped and a complete set is left untouched. Same config -> byte-identical
CSVs and truth; decoded clips are identical for the same encoder build.

As a data set (``get_dataset("synthetic_clips", root=..., n_clips=...)``) the
set is generated when missing and read back with the ``meld`` reader, so it
goes through exactly the code real MELD goes through.

Modules: :mod:`.synthetic_clips_config` (the config, MELD's layout, the table
and the cue vocabulary), :mod:`.synthetic_clips_plan` (step 1-4: labels, texts,
dialogues), :mod:`.synthetic_clips_draw` (faces, tones, encoding), this one
(rendering, the files on disk, the data set).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from neural.common import EMOTIONS, SENTIMENTS, atomic_write_bytes
from pipelines.datasets.base import DatasetError, register_dataset
from pipelines.datasets.synthetic_clips_draw import (
    TONES,
    encode_clip,
    render_face_frames,
    synth_tone,
    video_codec,
)

from pipelines.datasets.synthetic_clips_config import (
    GENERATOR_VERSION,
    MELD_COLUMNS,
    MELD_EMOTION_LABELS,
    MELD_SPLITS,
    SyntheticClipsConfig,
)
from pipelines.datasets.synthetic_clips_plan import ClipPlan, empirical_polarity_table, plan_clips

TRUTH_FILE = "truth.json"


# --------------------------------------------------------------------------- rendering


def render_clip(plan: ClipPlan, config: SyntheticClipsConfig, codec: str | None = None) -> bytes:
    """MP4 bytes of one clip: the face turning to ``plan.face_expression`` and the emotion's tone.

    ``codec`` defaults to :func:`~pipelines.datasets.synthetic_clips_draw.video_codec`.
    """
    cfg = config
    rng = np.random.default_rng([cfg.seed, 3, list(MELD_SPLITS).index(plan.split), plan.dialogue_id, plan.utterance_id])
    video = render_face_frames(plan.face_expression, plan.intensity, cfg.frames, cfg.frame_size, cfg.pixel_noise, rng)
    audio = synth_tone(plan.f0_hz, plan.level, TONES[plan.emotion], cfg.duration_s, cfg.sample_rate, cfg.audio_noise, rng)
    return encode_clip(video, audio, cfg.fps, cfg.sample_rate, codec or video_codec())


# --------------------------------------------------------------------------- on disk


def _csv_bytes(plans: list[ClipPlan]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MELD_COLUMNS)
    for sr_no, plan in enumerate(plans, 1):
        writer.writerow(plan.csv_row(sr_no))
    return buf.getvalue().encode("utf-8")


def _truth_doc(cfg: SyntheticClipsConfig, plans: list[ClipPlan], codec: str) -> dict[str, Any]:
    return {
        "generator": "emologic synthetic_clips",
        "generator_version": GENERATOR_VERSION,
        "config": cfg.to_dict(),
        "emotions": list(EMOTIONS),
        "sentiments": list(SENTIMENTS),
        "meld_emotion_labels": dict(MELD_EMOTION_LABELS),
        "polarity_table": copy.deepcopy(cfg.polarity_table),
        "empirical_polarity_table": {
            **{split: empirical_polarity_table(p for p in plans if p.split == split) for split in MELD_SPLITS},
            "all": empirical_polarity_table(plans),
        },
        "encoding": {"container": "mp4", "video_codec": codec, "audio_codec": "aac"},
        "clips": [p.truth() for p in plans],
    }


def _truth_bytes(doc: dict[str, Any]) -> bytes:
    """``doc`` as indented JSON with one line per clip (easy to grep and diff)."""
    head = json.dumps({k: v for k, v in doc.items() if k != "clips"}, indent=1)
    clips = ",\n".join("  " + json.dumps(c) for c in doc["clips"])
    return (head[:-2] + ',\n "clips": [\n' + clips + "\n ]\n}\n").encode("utf-8")


def read_truth(root: str | Path) -> dict[str, Any] | None:
    """The ``truth.json`` of the set at ``root`` (None if there is none); refuses a foreign or old one."""
    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        version, _ = doc["generator_version"], doc["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a synthetic-clips truth file ({exc}); delete {root} to regenerate") from None
    if version != GENERATOR_VERSION:
        raise DatasetError(
            f"synthetic clips at {root} were made by generator version {version}, this is version "
            f"{GENERATOR_VERSION}; delete the directory (or choose another) to regenerate"
        )
    return doc


def generate_clips(root: str | Path, config: SyntheticClipsConfig | None = None) -> Path:
    """Write the synthetic clips into ``root`` in MELD's layout (plus ``truth.json``); returns ``root``.

    Idempotent and resumable: on a directory this generator filled with the same
    config, only what is missing is written (nothing, if it is complete). A
    directory made with another config, or holding MELD files this generator did
    not write (real MELD, say), is refused with a :class:`DatasetError`.
    """
    cfg = config or SyntheticClipsConfig()
    root = Path(root)
    truth = read_truth(root)
    plans = plan_clips(cfg)
    if truth is None:
        meld_names = [n for split in MELD_SPLITS.values() for n in split if (root / n).exists()]
        if meld_names:
            raise DatasetError(
                f"{root} holds {', '.join(meld_names)} but no {TRUTH_FILE}: it is not a synthetic clips set "
                "(real MELD?); give an empty or new directory"
            )
        codec = video_codec()
        atomic_write_bytes(root / TRUTH_FILE, _truth_bytes(_truth_doc(cfg, plans, codec)))
    else:
        on_disk, wanted = truth["config"], cfg.to_dict()
        diffs = [f"{k}: on disk {on_disk.get(k)!r}, requested {v!r}" for k, v in wanted.items() if on_disk.get(k) != v]
        diffs += [f"{k}: on disk {on_disk[k]!r}, unknown here" for k in on_disk if k not in wanted]
        if diffs:
            raise DatasetError(
                f"synthetic clips at {root} were generated with another config ({'; '.join(diffs)}); "
                "choose another directory or delete it to regenerate"
            )
        codec = truth.get("encoding", {}).get("video_codec") or video_codec()
        if codec not in (video_codec(), "mpeg4"):
            raise DatasetError(
                f"synthetic clips at {root} were encoded with {codec}, which this PyAV cannot encode; "
                "finish the set where it was started, or delete it to regenerate"
            )
    for csv_name, clip_dir in MELD_SPLITS.values():
        (root / clip_dir).mkdir(parents=True, exist_ok=True)
    for plan in plans:
        path = root / plan.file
        if not path.is_file():
            atomic_write_bytes(path, render_clip(plan, cfg, codec))
    for split, (csv_name, _) in MELD_SPLITS.items():
        data = _csv_bytes([p for p in plans if p.split == split])
        path = root / csv_name
        if not path.is_file() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
    return root


# --------------------------------------------------------------------------- as a data set


def default_root(cfg: SyntheticClipsConfig) -> Path:
    """``$EMOLOGIC_DATA/synthetic-clips-<config digest>`` (``EMOLOGIC_DATA`` defaults to ``./data``)."""
    return Path(os.environ.get("EMOLOGIC_DATA", "data")) / f"synthetic-clips-{cfg.digest()}"


@register_dataset("synthetic_clips")
def synthetic_clips_dataset(root: str | Path | None = None, pretrain_fraction: float = 0.5, **options: Any):
    """The synthetic clips as a MELD data set (modality ``clip``), generated first if missing.

    ``options`` are :class:`SyntheticClipsConfig` fields. With a ``root`` that
    already holds a set, options not given are taken from its ``truth.json`` and
    the given ones must match (:func:`generate_clips` refuses otherwise); without
    a ``root`` each config gets its own directory (:func:`default_root`). The
    set is read with the ``meld`` reader: MELD's train part is cut into
    ``pretrain``/``train`` (``pretrain_fraction``, seeded by the config's seed),
    dev is ``val``. The generator's polarity table is in ``truth.json``
    (:func:`read_truth`).
    """
    from pipelines.datasets.meld import MeldDataset, meld_dataset

    existing = read_truth(root) if root is not None else None
    base = existing["config"] if existing is not None else {}
    cfg = SyntheticClipsConfig.from_dict({**base, **options})
    root = Path(root) if root is not None else default_root(cfg)
    generate_clips(root, cfg)
    ds = meld_dataset(root, pretrain_fraction=pretrain_fraction, seed=cfg.seed)
    return MeldDataset("synthetic_clips", ds.samples, ds.skipped, ds.split_names, ds.source, ds.notes)
