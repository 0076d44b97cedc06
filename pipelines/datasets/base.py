"""Samples, data sets, the data-set registry and label-mapping files.

Every sample carries a ``sample_id`` that its data set defines from the data
itself (a file name, an annotation index) -- never a row position -- so caches
and splits keyed by it survive shuffling, filtering and re-splitting.

A data set never crashes on a bad row and never invents one: a sample it cannot
use (image missing, label outside the vocabulary, ...) is left out and recorded
in ``Dataset.skipped`` with its reason.
"""
from __future__ import annotations

import csv
import inspect
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from neural.common import EMOTIONS, UserError

#: Directory of the editable label-mapping tables shipped with emologic.
MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"


class DatasetError(UserError, ValueError):
    """A data set that cannot be loaded: missing file, bad header, bad config."""


@dataclass(frozen=True)
class Sample:
    """One image (or, in a clip data set, one video clip) of a data set.

    ``label`` is an index into :data:`EMOTIONS` (``None``: unlabelled);
    ``annotations`` holds everything else the data set knows, JSON-serialisable.
    ``image_path`` is the sample's source file; :attr:`path` names it without
    implying an image (clip data sets such as ``meld`` store the clip there).
    """

    sample_id: str
    image_path: Path
    label: int | None
    split: str | None
    annotations: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label_name(self) -> str | None:
        return None if self.label is None else EMOTIONS[self.label]

    @property
    def path(self) -> Path:
        """The source file: an image, or the video clip of a clip data set."""
        return self.image_path


class Dataset:
    """An ordered collection of samples with unique ids, plus what was skipped."""

    label_names: tuple[str, ...] = EMOTIONS
    #: What a sample's file is, and so which pipeline and cache kind it takes:
    #: "image" (``pipelines.pipeline``) or "clip" (``pipelines.clips``).
    modality: str = "image"

    def __init__(
        self,
        name: str,
        samples: list[Sample],
        skipped: list[tuple[str, str]] | None = None,
        split_names: tuple[str, ...] = (),
        source: str = "",
        notes: list[str] | None = None,
    ):
        self.name = name
        self.samples = list(samples)
        #: (sample id, reason) of every sample left out, in input order.
        self.skipped = list(skipped or [])
        #: Where the data came from (a directory, a file), for messages.
        self.source = source
        #: Extra lines for :meth:`describe` (e.g. how to download missing images).
        self.notes = list(notes or [])
        self._by_id: dict[str, Sample] = {}
        for s in self.samples:
            if s.sample_id in self._by_id:
                raise ValueError(f"{name}: duplicate sample id {s.sample_id!r}")
            self._by_id[s.sample_id] = s
        present = [s.split for s in self.samples if s.split is not None]
        #: Split names: the declared ones first, then any others found in the data.
        self.split_names: tuple[str, ...] = tuple(dict.fromkeys([*split_names, *present]))

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._by_id

    def __getitem__(self, sample_id: str) -> Sample:
        """The sample with this id (lookup by id, never by position)."""
        try:
            return self._by_id[sample_id]
        except KeyError:
            raise KeyError(f"{self.name}: no sample with id {sample_id!r}") from None

    def by_split(self, split: str) -> list[Sample]:
        """The samples of ``split``, in data-set order; unknown split names raise."""
        if split not in self.split_names:
            known = ", ".join(self.split_names) or "none"
            raise DatasetError(f"{self.name} has no split {split!r}; its splits: {known}")
        return [s for s in self.samples if s.split == split]

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Samples per emotion (all splits, or one), in vocabulary order."""
        samples = self.samples if split is None else self.by_split(split)
        counts = Counter(s.label for s in samples)
        out = {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}
        if counts.get(None):
            out["unlabelled"] = counts[None]
        return out

    def skip_summary(self) -> dict[str, int]:
        """Number of skipped samples per kind of reason (the text before ':')."""
        return dict(Counter(reason.split(":", 1)[0] for _, reason in self.skipped).most_common())

    def skip_report(self, limit: int | None = 20) -> str:
        """The skipped samples, counted by reason and listed (up to ``limit``)."""
        if not self.skipped:
            return f"{self.name}: nothing skipped"
        lines = [f"{self.name}: {len(self.skipped)} sample(s) skipped"]
        lines += [f"  {n:6d}  {kind}" for kind, n in self.skip_summary().items()]
        shown = self.skipped if limit is None else self.skipped[:limit]
        lines += [f"  {sid}: {reason}" for sid, reason in shown]
        if len(shown) < len(self.skipped):
            lines.append(f"  ... and {len(self.skipped) - len(shown)} more (write_skip_report() lists all)")
        lines += self.notes
        return "\n".join(lines)

    def write_skip_report(self, path: str | Path) -> Path:
        """Write every skipped sample as CSV ``sample_id,reason``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["sample_id", "reason"])
            writer.writerows(self.skipped)
        return path

    def describe(self) -> str:
        """Counts per split and class, and what was skipped, as a text table."""
        head = f"data set {self.name}: {len(self)} samples"
        if self.source:
            head += f" from {self.source}"
        columns = list(self.class_counts())
        rows = [(split, self.class_counts(split)) for split in self.split_names]
        if any(s.split is None for s in self.samples):
            unsplit = [s for s in self.samples if s.split is None]
            counts = Counter(s.label for s in unsplit)
            rows.append(("(no split)", {n: counts.get(i, 0) for i, n in enumerate(self.label_names)}))
        rows.append(("total", self.class_counts()))
        width = max([len(r[0]) for r in rows] + [5])
        col_w = [max(len(c), 5) for c in columns]
        lines = [head, " ".join([" " * width, *(c.rjust(w) for c, w in zip(columns, col_w)), "total".rjust(6)])]
        for name, counts in rows:
            cells = [str(counts.get(c, 0)).rjust(w) for c, w in zip(columns, col_w)]
            lines.append(" ".join([name.ljust(width), *cells, str(sum(counts.values())).rjust(6)]))
        if self.skipped:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in self.skip_summary().items())
            lines.append(f"skipped {len(self.skipped)} ({kinds}); see skip_report()")
        lines += self.notes
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Dataset {self.name}: {len(self)} samples, {len(self.skipped)} skipped>"


# --------------------------------------------------------------------------- registry

_DATASETS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: make the loader ``fn(**cfg) -> Dataset`` available as ``get_dataset(name, **cfg)``."""

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _DATASETS and _DATASETS[name] is not fn:
            raise ValueError(f"data set {name!r} is already registered")
        _DATASETS[name] = fn
        return fn

    return deco


#: The modules of the built-in loaders (``pipelines/datasets/<name>.py``); each registers its data set
#: on import. They are imported at the registry's first lookup, not with the package: the synthetic
#: ones import torch, which code that only needs :class:`Sample` (the served query) must not pay for.
BUILTIN_LOADERS = ("afewva", "csv_dataset", "findingemo", "meld", "synthetic_clips", "synthetic")


def _ensure_builtin() -> None:
    import importlib

    for name in BUILTIN_LOADERS:
        importlib.import_module(f"pipelines.datasets.{name}")


def list_datasets() -> list[str]:
    _ensure_builtin()
    return sorted(_DATASETS)


def dataset_options(name: str) -> list[str]:
    """The config keys the loader of ``name`` accepts."""
    return list(inspect.signature(_loader(name)).parameters)


def _loader(name: str) -> Callable[..., Dataset]:
    _ensure_builtin()
    if name not in _DATASETS:
        raise DatasetError(f"unknown data set {name!r}; known data sets: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


def get_dataset(name: str, **cfg: Any) -> Dataset:
    """Load the registered data set ``name``; unknown config keys raise (never ignored)."""
    loader = _loader(name)
    params = inspect.signature(loader).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(cfg) - set(params))
        if unknown:
            raise DatasetError(
                f"unknown option(s) {', '.join(unknown)} for data set {name!r}; "
                f"known options: {', '.join(params)}"
            )
    return loader(**cfg)


# --------------------------------------------------------------------------- label mappings


def resolve_mapping_path(mapping: str | Path) -> Path:
    """A mapping file path, or the name of a shipped one (``findingemo_to_basic``)."""
    path = Path(mapping)
    if path.is_file():
        return path
    shipped = MAPPINGS_DIR / (path.name if path.suffix == ".csv" else f"{path.name}.csv")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in MAPPINGS_DIR.glob("*.csv")))
    raise DatasetError(f"mapping file {str(mapping)!r} not found (shipped mappings: {known})")


def load_mapping(mapping: str | Path) -> dict[str, str | None]:
    """Read a label-mapping table: ``{source label (lower case): emotion or None}``.

    The file is CSV with a header ``label,emotion``; lines starting with ``#`` are
    comments. An empty emotion means "leave these samples out" (they are skipped
    with a reason). Emotions must be in the vocabulary.
    """
    path = resolve_mapping_path(mapping)
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [(i, line) for i, line in enumerate(fh, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise DatasetError(f"{path}: empty mapping file (expected a header 'label,emotion')")
    rows = list(csv.reader(line for _, line in lines))
    header = [h.strip().lower() for h in rows[0]]
    if header[:2] != ["label", "emotion"]:
        raise DatasetError(f"{path}:{lines[0][0]}: mapping header must be 'label,emotion', got {','.join(rows[0])!r}")
    table: dict[str, str | None] = {}
    for (lineno, _), row in zip(lines[1:], rows[1:]):
        if len(row) < 2:
            raise DatasetError(f"{path}:{lineno}: expected 'label,emotion', got {','.join(row)!r}")
        label, emotion = row[0].strip(), row[1].strip().lower()
        if not label:
            raise DatasetError(f"{path}:{lineno}: empty label")
        if emotion and emotion not in EMOTIONS:
            raise DatasetError(
                f"{path}:{lineno}: {emotion!r} is not an emotion; the vocabulary is: {', '.join(EMOTIONS)}"
            )
        key = label.lower()
        target = emotion or None
        if key in table and table[key] != target:
            raise DatasetError(f"{path}:{lineno}: label {label!r} is mapped twice ({table[key]} and {target})")
        table[key] = target
    return table


def resolve_label(raw: str, mapping: dict[str, str | None] | None) -> tuple[int | None, str | None]:
    """``(emotion index, None)`` for a raw label, or ``(None, reason)`` when it has none.

    A label that is one of the seven emotions (any case) is taken as is unless the
    mapping lists it; otherwise the mapping decides.
    """
    key = raw.strip().lower()
    if not key:
        return None, "no label: empty label"
    if mapping is not None and key in mapping:
        target = mapping[key]
        if target is None:
            return None, f"label excluded by mapping: {raw.strip()!r} maps to no emotion"
        return EMOTIONS.index(target), None
    if key in EMOTIONS:
        return EMOTIONS.index(key), None
    where = "not in the mapping" if mapping is not None else "and no mapping file was given"
    return None, f"label outside vocabulary: {raw.strip()!r} is not one of {', '.join(EMOTIONS)} {where}"


def read_csv_table(path: Path, required: tuple[str, ...], what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line number, row)`` pairs of a CSV file; clear errors for a bad file."""
    if not path.is_file():
        raise DatasetError(f"{what} {path} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return parse_csv_text(fh.read(), required, f"{what} {path}")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_csv_text(text: str, required: tuple[str, ...], where: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Like :func:`read_csv_table` for text already in memory."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise DatasetError(f"{where} is empty (expected a header with {', '.join(required)})")
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            f"{where}: header lacks column(s) {', '.join(missing)}; "
            f"found {', '.join(header)}; expected at least {', '.join(required)}"
        )
    reader.fieldnames = header
    rows = []
    try:
        for row in reader:
            rows.append((reader.line_num, {k: (v or "") for k, v in row.items() if k is not None}))
    except csv.Error as exc:
        raise DatasetError(f"{where}: line {reader.line_num}: {exc}") from None
    return header, rows
