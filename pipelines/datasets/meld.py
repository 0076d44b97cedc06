"""MELD (Poria et al., ACL 2019): utterances of *Friends* as video clips with emotion and sentiment.

The published layout (``MELD.Raw``, its three archives extracted in place)::

    root/
      train_sent_emo.csv   dev_sent_emo.csv   test_sent_emo.csv
      train_splits/dia{D}_utt{U}.mp4
      dev_splits_complete/dia{D}_utt{U}.mp4
      output_repeated_splits_test/dia{D}_utt{U}.mp4

(a clip folder may also sit one level down, in ``root/train/``, ``root/dev/``,
``root/test/``). The CSVs have the columns ``Sr No., Utterance, Speaker, Emotion,
Sentiment, Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime``.

- ``sample_id`` is ``"<part>/dia{D}_utt{U}"`` (part = ``train``, ``dev``,
  ``test``): MELD numbers dialogues per part, so ``dia0_utt0`` exists in each.
- Emotions (neutral, joy, sadness, anger, surprise, fear, disgust) map to the
  seven basic emotions through an editable table (default
  ``pipelines/mappings/meld_to_basic.csv``); sentiments (negative, neutral,
  positive) become an index into :data:`neural.common.SENTIMENTS`.
- Splits: MELD's dev is ``val``, test is ``test``; train is cut into ``pretrain``
  (stage-0 training of the networks) and ``train`` (the logic) with
  :func:`pipelines.splits.assign_splits` -- stratified by emotion, from the ids
  and the seed, over every usable train row *before* missing clips are dropped,
  so the split does not move as clips come and go.
- Annotations: ``utterance``, ``speaker``, ``sentiment`` (index),
  ``sentiment_name``, ``original_emotion``, ``dialogue_id``, ``utterance_id``,
  ``meld_part``, and the other columns as strings.
- Left out with a reason (``Dataset.skipped``): a bad row (ids not integers, a
  repeated (dialogue, utterance)), an emotion or sentiment outside the vocabulary,
  a missing clip. An empty utterance is kept here and skipped by the clip
  pipeline (it is a property of the input, checked wherever samples come from).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from neural.common import EMOTIONS, SENTIMENTS
from pipelines.datasets.base import (
    Dataset,
    DatasetError,
    Sample,
    load_mapping,
    read_csv_table,
    register_dataset,
    resolve_label,
)
from pipelines.splits import assign_splits

DEFAULT_MAPPING = "meld_to_basic"
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
SPLIT_NAMES = ("pretrain", "train", "val", "test")


@dataclass(frozen=True)
class MeldPart:
    csv: str
    clips: str  # folder of dia{D}_utt{U}.mp4
    split: str | None  # emologic split; None: train, cut into pretrain/train


#: MELD's three parts, in its own names.
MELD_PARTS: dict[str, MeldPart] = {
    "train": MeldPart("train_sent_emo.csv", "train_splits", None),
    "dev": MeldPart("dev_sent_emo.csv", "dev_splits_complete", "val"),
    "test": MeldPart("test_sent_emo.csv", "output_repeated_splits_test", "test"),
}


class MeldDataset(Dataset):
    """MELD clip samples (``modality = "clip"``: cached with :mod:`pipelines.clips`)."""

    modality = "clip"

    sentiment_names: tuple[str, ...] = SENTIMENTS

    def sentiment_counts(self, split: str | None = None) -> dict[str, int]:
        """Samples per sentiment (all splits, or one)."""
        samples = self.samples if split is None else self.by_split(split)
        counts = Counter(s.annotations.get("sentiment") for s in samples)
        return {name: counts.get(i, 0) for i, name in enumerate(self.sentiment_names)}


def clip_name(dialogue: int, utterance: int) -> str:
    return f"dia{dialogue}_utt{utterance}.mp4"


def _clip_dir(root: Path, part: str) -> Path:
    folder = MELD_PARTS[part].clips
    for candidate in (root / folder, root / part / folder):
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"MELD clip folder {folder}/ not found in {root} (nor in {root / part}); "
        f"extract MELD.Raw's {part}.tar.gz there, or leave the part out with parts=[...]"
    )


def _int_id(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


@register_dataset("meld")
def meld_dataset(
    root: str | Path | None = None,
    mapping: str | Path = DEFAULT_MAPPING,
    parts: tuple[str, ...] | list[str] = tuple(MELD_PARTS),
    pretrain_fraction: float = 0.5,
    seed: int = 0,
) -> MeldDataset:
    """MELD under ``root``; see the module docstring. ``parts``: which of train, dev, test to load."""
    if root is None:
        raise DatasetError("the meld data set needs root=DIR, the directory with MELD's CSVs and clip folders")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"MELD directory {root} does not exist")
    parts = [parts] if isinstance(parts, str) else list(parts)
    unknown = [p for p in parts if p not in MELD_PARTS]
    if unknown or not parts:
        raise DatasetError(f"unknown MELD part(s) {', '.join(map(repr, unknown)) or '(none given)'}; parts are {', '.join(MELD_PARTS)}")
    if not 0.0 <= float(pretrain_fraction) <= 1.0:
        raise DatasetError(f"pretrain_fraction must be in [0, 1], got {pretrain_fraction}")
    missing_csv = [MELD_PARTS[p].csv for p in parts if not (root / MELD_PARTS[p].csv).is_file()]
    if missing_csv:
        raise DatasetError(
            f"{root} lacks {', '.join(missing_csv)}; MELD's CSVs ({', '.join(m.csv for m in MELD_PARTS.values())}) "
            "go in its top directory (or load fewer parts with parts=[...])"
        )
    table = load_mapping(mapping)

    parsed: list[tuple[str, str, Path, int, dict]] = []  # id, part, clip, label, annotations
    skipped: list[tuple[str, str]] = []
    for part in parts:
        info = MELD_PARTS[part]
        clip_dir = _clip_dir(root, part)
        header, rows = read_csv_table(root / info.csv, REQUIRED_COLUMNS, "MELD annotation file")
        seen: dict[str, int] = {}
        for lineno, row in rows:
            dia, utt = _int_id(row["Dialogue_ID"]), _int_id(row["Utterance_ID"])
            if dia is None or utt is None:
                skipped.append((f"{part}/line-{lineno}", (
                    f"bad row: Dialogue_ID {row['Dialogue_ID']!r} / Utterance_ID {row['Utterance_ID']!r} "
                    f"are not non-negative integers ({info.csv} line {lineno})")))
                continue
            sid = f"{part}/dia{dia}_utt{utt}"
            if sid in seen:
                skipped.append((sid, f"duplicate row: {info.csv} line {lineno} repeats the utterance of line {seen[sid]}"))
                continue
            seen[sid] = lineno
            label, reason = resolve_label(row["Emotion"], table)
            sentiment = row["Sentiment"].strip().lower()
            if reason is None and sentiment not in SENTIMENTS:
                reason = f"sentiment outside vocabulary: {row['Sentiment'].strip()!r} is not one of {', '.join(SENTIMENTS)}"
            if reason is not None:
                skipped.append((sid, reason))
                continue
            ann = {
                "utterance": row["Utterance"].strip(),
                "speaker": row["Speaker"].strip(),
                "sentiment": SENTIMENTS.index(sentiment),
                "sentiment_name": sentiment,
                "original_emotion": row["Emotion"].strip(),
                "dialogue_id": dia,
                "utterance_id": utt,
                "meld_part": part,
            }
            for extra in header:
                if extra not in REQUIRED_COLUMNS:
                    ann[extra] = row.get(extra, "").strip()
            parsed.append((sid, part, clip_dir / clip_name(dia, utt), label, ann))

    fraction = float(pretrain_fraction)
    train = [(sid, label) for sid, part, _, label, _ in parsed if MELD_PARTS[part].split is None]
    train_splits = assign_splits(
        [sid for sid, _ in train], [label for _, label in train], {"pretrain": fraction, "train": 1.0 - fraction}, seed
    ) if train else {}
    samples = []
    n_missing = 0
    for sid, part, clip, label, ann in parsed:
        if not clip.is_file():
            n_missing += 1
            skipped.append((sid, f"clip missing: {clip}"))
            continue
        split = MELD_PARTS[part].split or train_splits[sid]
        samples.append(Sample(sid, clip, label, split, ann))
    mapped = Counter(label for *_, label, _ in parsed)
    notes = [
        f"labels after mapping ({len(parsed)} usable rows, clip or not): "
        + ", ".join(f"{name} {mapped.get(i, 0)}" for i, name in enumerate(EMOTIONS))
    ]
    if n_missing:
        notes.append(f"{n_missing} of {len(parsed)} MELD clips are not on disk (listed in skip_report())")
    declared = {name for p in parts for name in ((MELD_PARTS[p].split,) if MELD_PARTS[p].split else ("pretrain", "train"))}
    split_names = tuple(s for s in SPLIT_NAMES if s in declared)
    return MeldDataset("meld", samples, skipped, split_names, str(root), notes)
