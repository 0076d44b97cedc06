"""Any ``image_path,label[,split]`` table (e.g. EmoSet-style split files).

- Relative image paths resolve against the CSV's directory (or ``root=``).
- ``sample_id`` is the image path as written in the table, normalised to
  forward slashes (relative to the base directory when an absolute path lies
  under it), so it does not depend on row order or on where the data set lives.
- Labels that are one of the seven emotions (any case) are taken as is; others
  go through the mapping file (``mapping=``: a path or the name of a shipped
  table such as ``emoset_to_basic``). A label outside both is skipped with its
  reason, or, with ``strict=True``, raises one error listing the vocabulary.
- Splits come from the ``split`` column when there is one; otherwise they are
  assigned with :func:`pipelines.splits.assign_splits` (stratified, from ids).
- Other columns are kept, as strings, in ``Sample.annotations``.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from neural.common import EMOTIONS
from pipelines.datasets.base import Dataset, DatasetError, Sample, load_mapping, read_csv_table, register_dataset, resolve_label
from pipelines.splits import DEFAULT_SPLIT_FRACTIONS, assign_splits


def _sample_id(raw: str, base: Path) -> str:
    text = raw.strip().replace("\\", "/")
    path = Path(text)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return str(PurePosixPath(*[p for p in PurePosixPath(text).parts if p != "."]))


@register_dataset("csv")
def csv_dataset(
    path: str | Path | None = None,
    mapping: str | Path | None = None,
    root: str | Path | None = None,
    strict: bool = False,
    split_fractions: dict[str, float] | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Dataset:
    """The table at ``path``; see the module docstring. ``name`` defaults to the file's stem."""
    if path is None:
        raise DatasetError("the csv data set needs path=FILE, a CSV with columns image_path,label[,split]")
    path = Path(path).expanduser()
    header, rows = read_csv_table(path, ("image_path", "label"), "CSV data set")
    base = Path(root).expanduser() if root is not None else path.parent
    table = load_mapping(mapping) if mapping is not None else None
    has_split = "split" in header
    if has_split and split_fractions is not None:
        raise DatasetError(f"{path} has a split column; split_fractions would be ignored, so leave it out")

    parsed: list[tuple[str, Path, int, str | None, dict]] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, row in rows:
        raw_path = row["image_path"].strip()
        if not raw_path:
            skipped.append((f"line-{lineno}", f"bad row: empty image_path on line {lineno}"))
            continue
        sid = _sample_id(raw_path, base)
        if sid in seen:
            skipped.append((sid, f"duplicate image: line {lineno} repeats the image of line {seen[sid]}"))
            continue
        seen[sid] = lineno
        label, reason = resolve_label(row["label"], table)
        if reason is not None:
            if strict:
                raise DatasetError(
                    f"{path}:{lineno}: label {row['label'].strip()!r} is not one of the emotions "
                    f"({', '.join(EMOTIONS)})" + (f" nor in the mapping {mapping}" if table is not None else "; give mapping=FILE")
                )
            skipped.append((sid, reason))
            continue
        split = row["split"].strip() if has_split else None
        if has_split and not split:
            skipped.append((sid, f"bad row: empty split on line {lineno}"))
            continue
        extra = {k: v.strip() for k, v in row.items() if k not in ("image_path", "label", "split")}
        ann = {"original_label": row["label"].strip(), **extra}
        image = Path(raw_path)
        parsed.append((sid, image if image.is_absolute() else base / image, label, split, ann))

    if has_split:
        split_names = ()
    else:
        fractions = dict(split_fractions or DEFAULT_SPLIT_FRACTIONS)
        split_names = tuple(fractions)
        assigned = assign_splits([p[0] for p in parsed], [p[2] for p in parsed], fractions, seed)
        parsed = [(sid, img, label, assigned[sid], ann) for sid, img, label, _, ann in parsed]

    samples = []
    for sid, image, label, split, ann in parsed:
        if not image.is_file():
            skipped.append((sid, f"image missing: {image}"))
            continue
        samples.append(Sample(sid, image, label, split, ann))
    return Dataset(name or path.stem, samples, skipped, split_names, str(path))
