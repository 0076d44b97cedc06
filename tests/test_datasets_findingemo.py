import json

import pytest
from PIL import Image

from neural.common import EMOTIONS
from pipelines.datasets import DatasetError, get_dataset

# The real column format of findingemo-light's data/annotations_single.ann.
HEADER = "index,user,image_path,tags,age,valence,arousal,emotion,dec_factors,ambiguity,datetime"
ROWS = [
    '0,5fd97d5b40332e276ea58209,/Run_2/Loving toddlers sports/haiti-kids.jpg,Undefined,Children,3,6,Joy,"BodyLanguage,FacialExpression",0,2023-09-01 00:00:00.000000',
    "5,5fd97d5b40332e276ea58209,/Run_2/Frustrated forty-something office/team-work.jpg,Undefined,Young Adults,-3,0,Rage,FacialExpression,6,2023-09-01 00:00:00.000000",
    '9,607b819f7f6f3c17b0849690,/Run_2/Guilt youth mall/0a22745c_1140x641.png,Undefined,"Youth,Young Adults",0,3,Interest,BodyLanguage,3,2023-09-01 00:00:00.000000',
    "11,5e9820b9c63c530008087a8c,/Run_1/Joyful forty-something sports/pilot.jpg,Undefined,Undefined,2,4,Grief,Undefined,0,2023-09-01 00:00:00.000000",
    "12,5fd97d5b40332e276ea58209,/Run_1/Scared adolescents prison/jail.jpg,Undefined,Adults,0,3,Nostalgia,Context,1,2023-09-01 00:00:00.000000",
    "15,5fd97d5b40332e276ea58209,/Run_1/Scared adolescents prison/jail2.jpg,Undefined,Adults,7,3,Fear,Context,1,2023-09-01 00:00:00.000000",
    "16,5fd97d5b40332e276ea58209,/Run_1/Happy seniors park/missing.jpg,Undefined,Seniors,1,1,Serenity,Staging,2,2023-09-01 00:00:00.000000",
]
PRESENT = ["Run_2/Loving toddlers sports/haiti-kids.jpg", "Run_2/Frustrated forty-something office/team-work.jpg",
           "Run_2/Guilt youth mall/0a22745c_1140x641.png", "Run_1/Joyful forty-something sports/pilot.jpg"]


@pytest.fixture
def fixture(tmp_path):
    images = tmp_path / "images"
    for rel in PRESENT:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(images / rel)
    ann = tmp_path / "annotations.csv"
    ann.write_text("\n".join([HEADER, *ROWS]) + "\n")
    return images, ann


def test_loads_maps_and_normalises(fixture):
    images, ann = fixture
    ds = get_dataset("findingemo", images=images, annotations=ann)
    assert [s.sample_id for s in ds] == ["fe-0", "fe-5", "fe-9", "fe-11"]
    assert [s.label_name for s in ds] == ["happy", "angry", "neutral", "sad"]
    joy, rage, interest = ds["fe-0"].annotations, ds["fe-5"].annotations, ds["fe-9"].annotations
    assert (joy["valence"], joy["arousal"]) == (1.0, 1.0)
    assert (rage["valence"], rage["arousal"]) == (-1.0, -1.0)
    assert (interest["valence"], interest["arousal"]) == (0.0, 0.0)
    assert (joy["valence_raw"], joy["arousal_raw"], rage["ambiguity"]) == (3, 6, 6)
    assert joy["dec_factors"] == ["BodyLanguage", "FacialExpression"]
    assert interest["age"] == ["Youth", "Young Adults"]
    assert rage["original_emotion"] == "Rage" and rage["user"] == "5fd97d5b40332e276ea58209"
    assert ds["fe-0"].image_path == images / PRESENT[0]
    assert all(s.split in ("pretrain", "train", "val", "test") for s in ds)


def test_bad_rows_and_missing_images_are_skipped_with_reasons(fixture):
    images, ann = fixture
    ds = get_dataset("findingemo", images=images, annotations=ann)
    reasons = dict(ds.skipped)
    assert reasons["fe-12"].startswith("label outside vocabulary: 'Nostalgia'")
    assert reasons["fe-15"] == "bad annotation: valence 7 outside -3..3"
    assert reasons["fe-16"] == f"image missing: {images / 'Run_1/Happy seniors park/missing.jpg'}"
    text = ds.describe()
    assert "skipped 3 (label outside vocabulary: 1, bad annotation: 1, image missing: 1)" in text
    assert f"download_data(target_dir={str(images)!r})" in text
    assert "labels after mapping (5 usable annotations, image or not): angry 1, disgust 0, fear 0, happy 2" in text


def test_splits_do_not_change_when_images_arrive(fixture):
    images, ann = fixture
    before = {s.sample_id: s.split for s in get_dataset("findingemo", images=images, annotations=ann)}
    (images / "Run_1/Happy seniors park").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "Run_1/Happy seniors park/missing.jpg")
    after = {s.sample_id: s.split for s in get_dataset("findingemo", images=images, annotations=ann)}
    assert "fe-16" in after and all(after[k] == v for k, v in before.items())


def test_custom_mapping_can_exclude_labels(fixture, tmp_path):
    images, ann = fixture
    mapping = tmp_path / "map.csv"
    mapping.write_text("# drop interest\nlabel,emotion\njoy,surprise\nrage,angry\ninterest,\ngrief,sad\n")
    ds = get_dataset("findingemo", images=images, annotations=ann, mapping=mapping)
    assert ds["fe-0"].label == EMOTIONS.index("surprise")
    assert dict(ds.skipped)["fe-9"] == "label excluded by mapping: 'Interest' maps to no emotion"


def test_user_errors(fixture, tmp_path):
    images, ann = fixture
    with pytest.raises(DatasetError, match="needs images=DIR.*download_data"):
        get_dataset("findingemo", annotations=ann)
    with pytest.raises(DatasetError, match="image directory .*nowhere does not exist.*download_data"):
        get_dataset("findingemo", images=tmp_path / "nowhere", annotations=ann)
    with pytest.raises(DatasetError, match="annotation file .*absent.csv not found"):
        get_dataset("findingemo", images=images, annotations=tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("index,image_path,valence,arousal,label\n0,/a.jpg,0,0,Joy\n")
    with pytest.raises(DatasetError, match="header lacks column\\(s\\) user, emotion, dec_factors, ambiguity"):
        get_dataset("findingemo", images=images, annotations=bad)


def test_duplicate_index_is_skipped(fixture, tmp_path):
    images, _ = fixture
    ann = tmp_path / "dup.csv"
    ann.write_text("\n".join([HEADER, ROWS[0], ROWS[0].replace("haiti-kids.jpg", "other.jpg")]) + "\n")
    ds = get_dataset("findingemo", images=images, annotations=ann)
    assert len(ds) == 1 and ds.skipped == [("fe-0", "duplicate index: line 3 repeats index 0 of line 2")]


def test_package_annotations_load_without_images(tmp_path):
    pytest.importorskip("findingemo_light")
    ds = get_dataset("findingemo", images=tmp_path)
    assert len(ds) == 0
    kinds = ds.skip_summary()
    assert list(kinds) == ["image missing"], kinds  # every one of the 24 emotions is mapped
    assert kinds["image missing"] > 25000
    assert ds.skipped[0][0] == "fe-0"


# --------------------------------------------------------------------------- real rows
# The annotation rows shipped in findingemo-light, with local stand-ins for the
# images of the first rows (scikit-image photos: the astronaut where the
# annotator named a facial expression, scenes without a face elsewhere).

N_REAL = 24  # the package's first 24 rows: 7 emotions of Plutchik's, 5 basic ones after mapping
MISSING = ("fe-16", "fe-25", "fe-31")  # rows of those whose image is "not downloaded"
FACES = ("astronaut", "astronaut_flip", "astronaut_half", "astronaut_gray")
SCENES = ("coffee", "rocket", "chelsea", "clock", "coins", "moon")


def _real_rows() -> list[dict]:
    import csv
    import io

    pytest.importorskip("findingemo_light")
    from pipelines.datasets.findingemo import package_annotations

    text, _ = package_annotations()
    return list(csv.DictReader(io.StringIO(text)))


def _photo_of(row: dict, k: int) -> str:
    return FACES[k % len(FACES)] if "FacialExpression" in row["dec_factors"] else SCENES[k % len(SCENES)]


@pytest.fixture(scope="module")
def real_rows_with_images(tmp_path_factory):
    from tests.photo_helpers import write_photo

    rows = _real_rows()
    images = tmp_path_factory.mktemp("findingemo_images")
    for k, row in enumerate(rows[:N_REAL]):
        if f"fe-{row['index']}" not in MISSING:
            write_photo(images.joinpath(*[p for p in row["image_path"].split("/") if p]), _photo_of(row, k))
    return rows, images


def _basic_emotion(plutchik: str) -> str:
    """The mapping file read here with the csv module, not with the loader's code."""
    import csv
    from pathlib import Path

    import pipelines

    path = Path(pipelines.__file__).parent / "mappings" / "findingemo_to_basic.csv"
    with open(path, newline="") as fh:
        table = {r["label"]: r["emotion"] for r in csv.DictReader(line for line in fh if not line.startswith("#"))}
    return table[plutchik]


def test_real_package_rows_load_with_local_images(real_rows_with_images):
    rows, images = real_rows_with_images
    ds = get_dataset("findingemo", images=images)  # the package's own annotation file, all of it
    first = {f"fe-{r['index']}": r for r in rows[:N_REAL]}
    assert [s.sample_id for s in ds] == [sid for sid in first if sid not in MISSING]
    for s in ds:
        row = first[s.sample_id]
        assert s.label_name == _basic_emotion(row["emotion"]) and s.annotations["original_emotion"] == row["emotion"]
        assert s.annotations["valence"] == pytest.approx(int(row["valence"]) / 3)
        assert s.annotations["arousal"] == pytest.approx((int(row["arousal"]) - 3) / 3)
        assert s.annotations["dec_factors"] == [t for t in row["dec_factors"].split(",") if t]
        assert s.image_path == images.joinpath(*[p for p in row["image_path"].split("/") if p])
    assert {s.label_name for s in ds} == {"happy", "neutral", "fear", "angry", "sad"}
    # every other annotation's image is missing: counted, listed, not fatal
    n_missing = len(rows) - len(ds)
    assert ds.skip_summary() == {"image missing": n_missing}
    reasons = dict(ds.skipped)
    for sid in MISSING:
        path = images.joinpath(*[p for p in first[sid]["image_path"].split("/") if p])
        assert reasons[sid] == f"image missing: {path}"
    report = ds.skip_report()
    assert all(f"{sid}: image missing" in report for sid in MISSING)
    assert f"{n_missing} of {len(rows)} FindingEmo images are not in {images}" in report


def test_real_rows_through_the_image_pipeline(real_rows_with_images):
    from pipelines.pipeline import ImagePipeline, PipelineConfig

    rows, images = real_rows_with_images
    ds = get_dataset("findingemo", images=images)
    done, skipped = ImagePipeline(PipelineConfig(face_source="mtcnn", scene_size=224)).process(list(ds)[:12])
    assert skipped == [] and len(done) == 12
    photos = {f"fe-{r['index']}": _photo_of(r, k) for k, r in enumerate(rows[:N_REAL])}
    for p in done:
        if photos[p.sample_id] in FACES:
            assert p.n_faces == 1 and p.faces.shape == (1, 64, 64), p.sample_id  # MTCNN found her face
        else:
            assert p.n_faces == 0, (p.sample_id, photos[p.sample_id])
        sample = ds[p.sample_id]
        assert p.label == sample.label and p.annotations["dec_factors"] == sample.annotations["dec_factors"]
    assert sum(p.n_faces for p in done) >= 4


def test_harness_runs_on_real_rows_and_lists_the_missing_images(real_rows_with_images, tmp_path):
    from experiments.joint_vs_frozen import main

    rows, images = real_rows_with_images
    argv = ["--dataset", "findingemo", "--images", str(images), "--seeds", "0", "--epochs", "1", "--head-epochs", "5",
            "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    run_dir = tmp_path / "runs" / "latest"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "findingemo" and set(results["regimes"]) == {"frozen", "joint", "uniform_rules",
                                                                              "late_fusion"}
    assert results["n_test"] == 2  # fe-6 and fe-8 (fe-31, the third test row, is missing)
    n_missing = len(rows) - (N_REAL - len(MISSING))
    assert results["skipped"]["n"] == n_missing and results["skipped"]["by_reason"] == {"image missing": n_missing}
    assert {sid for sid, _ in results["skipped"]["images"]} >= set(MISSING)
    face = results["regimes"]["joint"]["per_seed"]["0"]["provenance"]["face1"]["parts"]["face_emotion"]
    assert face["origin"] == "fer2013"
    report = (run_dir / "report.md").read_text()
    assert f"## Left out ({n_missing} images)" in report and "`fe-16`: image missing" in report
