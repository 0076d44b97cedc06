"""FindingEmo (Mertens et al., NeurIPS 2024 D&B): annotations + images the user downloads.

Annotations come from the ``findingemo-light`` package (its
``data/annotations_single.ann``, a CSV with columns ``index, user, image_path,
tags, age, valence, arousal, emotion, dec_factors, ambiguity, datetime``), or
from a CSV in the same format given as ``annotations=``. Images are not shipped;
``images=`` is the directory the package's downloader wrote them to, so an
annotation's ``image_path`` (``/Run_2/<query>/<file>``) resolves to
``images/Run_2/<query>/<file>``.

- ``sample_id`` is ``"fe-<index>"``: the annotation's own ``index`` column, unique
  per annotation and stable across releases and row orders.
- Emotions (Plutchik's 24) map to the seven basic emotions through an editable
  table (default ``pipelines/mappings/findingemo_to_basic.csv``).
- Valence (-3..3) and arousal (0..6) are normalised to [-1, 1]
  (``valence / 3``, ``(arousal - 3) / 3``); the raw values, ambiguity (0..6) and the
  deciding factors (``dec_factors``, a list) are kept.
- FindingEmo ships no splits: they are assigned with
  :func:`pipelines.splits.assign_splits` over every annotation with a usable
  label, *before* dropping those whose image is missing, so a split does not
  change as more images get downloaded.
- Missing images are skipped and listed (``Dataset.skip_report()``), with the
  command that downloads them.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from neural.common import EMOTIONS
from pipelines.datasets.base import (
    Dataset,
    DatasetError,
    Sample,
    load_mapping,
    parse_csv_text,
    read_csv_table,
    register_dataset,
    resolve_label,
)
from pipelines.splits import DEFAULT_SPLIT_FRACTIONS, assign_splits

DEFAULT_MAPPING = "findingemo_to_basic"
REQUIRED_COLUMNS = ("index", "user", "image_path", "valence", "arousal", "emotion", "dec_factors", "ambiguity")
#: Raw annotation scales (inclusive).
VALENCE_RANGE, AROUSAL_RANGE, AMBIGUITY_RANGE = (-3, 3), (0, 6), (0, 6)


def download_command(images: str | Path) -> str:
    """The shell command that downloads the FindingEmo images into ``images``."""
    return (
        "pip install findingemo-light && python -c \"from findingemo_light.paper.download_multi "
        f"import download_data; download_data(target_dir={str(images)!r})\""
    )


def package_annotations() -> tuple[str, str]:
    """(CSV text, where it came from) of the annotations shipped in ``findingemo-light``."""
    try:
        from findingemo_light.data.read_annotations import read_annotations
    except ImportError:
        raise DatasetError(
            "the findingemo data set needs the findingemo-light package for its annotations: "
            "pip install findingemo-light (or pip install 'emologic[findingemo]'), "
            "or pass annotations=PATH to a CSV in its format"
        ) from None
    import findingemo_light.data as pkg_data

    return read_annotations(), str(Path(pkg_data.__file__).parent / "annotations_single.ann")


def _int_in(value: str, bounds: tuple[int, int], column: str) -> tuple[int | None, str | None]:
    try:
        number = int(value.strip())
    except ValueError:
        return None, f"bad annotation: {column} {value!r} is not an integer"
    if not bounds[0] <= number <= bounds[1]:
        return None, f"bad annotation: {column} {number} outside {bounds[0]}..{bounds[1]}"
    return number, None


def _split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@register_dataset("findingemo")
def findingemo_dataset(
    images: str | Path | None = None,
    annotations: str | Path | None = None,
    mapping: str | Path = DEFAULT_MAPPING,
    split_fractions: dict[str, float] | None = None,
    seed: int = 0,
) -> Dataset:
    """FindingEmo with images under ``images``; see the module docstring."""
    if images is None:
        raise DatasetError(
            "the findingemo data set needs images=DIR, the directory its images were downloaded to; "
            f"to download them: {download_command('DIR')}"
        )
    images = Path(images).expanduser()
    if not images.is_dir():
        raise DatasetError(f"FindingEmo image directory {images} does not exist; to download the images: {download_command(images)}")
    if annotations is not None:
        header, rows = read_csv_table(Path(annotations), REQUIRED_COLUMNS, "FindingEmo annotation file")
        source = str(annotations)
    else:
        text, source = package_annotations()
        header, rows = parse_csv_text(text, REQUIRED_COLUMNS, f"FindingEmo annotations {source}")
    table = load_mapping(mapping)
    fractions = dict(split_fractions or DEFAULT_SPLIT_FRACTIONS)

    parsed: list[tuple[str, Path, int, dict]] = []  # id, image, label, annotations
    skipped: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, row in rows:
        index = row["index"].strip()
        sid = f"fe-{index}" if index else f"line-{lineno}"
        if not index:
            skipped.append((sid, f"bad annotation: empty index on line {lineno}"))
            continue
        if sid in seen:
            skipped.append((sid, f"duplicate index: line {lineno} repeats index {index} of line {seen[sid]}"))
            continue
        seen[sid] = lineno
        valence, err_v = _int_in(row["valence"], VALENCE_RANGE, "valence")
        arousal, err_a = _int_in(row["arousal"], AROUSAL_RANGE, "arousal")
        ambiguity, err_m = _int_in(row["ambiguity"], AMBIGUITY_RANGE, "ambiguity")
        label, err_l = resolve_label(row["emotion"], table)
        rel = row["image_path"].strip()
        err_p = None if rel else "bad annotation: empty image_path"
        error = err_p or err_v or err_a or err_m or err_l
        if error:
            skipped.append((sid, error))
            continue
        ann = {
            "index": int(index) if index.isdigit() else index,
            "image_rel_path": rel,
            "original_emotion": row["emotion"].strip(),
            "valence": round(valence / 3.0, 6),
            "arousal": round((arousal - 3) / 3.0, 6),
            "valence_raw": valence,
            "arousal_raw": arousal,
            "ambiguity": ambiguity,
            "dec_factors": _split_list(row["dec_factors"]),
            "user": row["user"].strip(),
        }
        for extra in header:
            if extra not in REQUIRED_COLUMNS and extra not in ann:
                value = row.get(extra, "").strip()
                ann[extra] = _split_list(value) if extra in ("tags", "age") else value
        parsed.append((sid, images.joinpath(*[p for p in rel.split("/") if p]), label, ann))

    splits = assign_splits([p[0] for p in parsed], [p[2] for p in parsed], fractions, seed)
    samples = []
    n_missing = 0
    for sid, path, label, ann in parsed:
        if not path.is_file():
            n_missing += 1
            skipped.append((sid, f"image missing: {path}"))
            continue
        samples.append(Sample(sid, path, label, splits[sid], ann))
    mapped = Counter(label for _, _, label, _ in parsed)
    notes = [
        f"labels after mapping ({len(parsed)} usable annotations, image or not): "
        + ", ".join(f"{name} {mapped.get(i, 0)}" for i, name in enumerate(EMOTIONS))
    ]
    if n_missing:
        notes.append(
            f"{n_missing} of {len(parsed)} FindingEmo images are not in {images}; to download them: "
            f"{download_command(images)} (some URLs are dead; the downloader tries the Wayback Machine)"
        )
    return Dataset("findingemo", samples, skipped, tuple(fractions), f"{source} + {images}", notes)

