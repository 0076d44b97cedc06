import pytest
from PIL import Image

from neural.vocabulary import EMOTIONS
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
