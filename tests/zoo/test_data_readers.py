"""Dataset readers on the real data, and on small files in tmp_path derived from it."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import scipy.io as sio

from cmhash import constants
from cmhash.errors import CmhashError, DataFormatError, DataNotFoundError, InvalidInputError
from cmhash.zoo.data import (  # noqa: I001
    MIRFLICKR_CLASSES,
    PairedDataset,
    default_data_root,
    load_dataset,
    read_clip_mat,
    read_coco,
    read_dcmh_mat,
    read_dcph_text,
)

# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def coco(coco_mini_root):
    return read_coco(coco_mini_root)


@pytest.fixture(scope="module")
def mirflickr(mirflickr_root):
    return read_dcmh_mat(mirflickr_root)


@pytest.fixture(scope="module")
def mir50(mirflickr_root):
    """The first 50 MIRFlickr rows, straight from the files."""
    lall = sio.loadmat(mirflickr_root / "mirflickr25k-lall.mat")["LAll"][:50]
    yall = sio.loadmat(mirflickr_root / "mirflickr25k-yall.mat")["YAll"][:50]
    lines = {
        name: (mirflickr_root / name).read_text(encoding="utf-8").splitlines()[:50]
        for name in ("all_tags.txt", "all_imgs.txt")
    }
    return lall, yall, lines


def _write_dcmh(folder, lall, yall, tags=None, *, lkey="LAll", ykey="YAll"):
    folder.mkdir(parents=True, exist_ok=True)
    sio.savemat(folder / "mir-lall.mat", {lkey: lall})
    sio.savemat(folder / "mir-yall.mat", {ykey: yall})
    if tags is not None:
        (folder / "all_tags.txt").write_text("\n".join(tags) + "\n", encoding="utf-8")
    return folder


def _write_clip(
    folder, data: PairedDataset, root, *, caption_shape="row", label_key="category", absolute=False
):
    """A CLIP-pipeline folder for a coco-mini dataset, image paths relative to `root` (or absolute)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(p if absolute else p.relative_to(root)) for p in data.images]
    sio.savemat(folder / "index.mat", {"index": paths})  # a space-padded char matrix
    cells = np.empty(len(data), dtype=object)
    for i, caps in enumerate(data.texts):
        cells[i] = np.array(caps, dtype=object)  # each cell: a 1 x 5 cell of strings
    if caption_shape == "column":
        cells = cells.reshape(-1, 1)
    elif caption_shape == "one string":  # a plain char matrix: one caption per sample
        cells = [caps[0] for caps in data.texts]
    sio.savemat(folder / "caption.mat", {"caption": cells})
    sio.savemat(folder / "label.mat", {label_key: data.labels})
    return folder


def _write_dcph(folder, lall, yall, imgs, parts, *, tag="ph"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images_name.txt").write_text("\n".join(imgs) + "\n")
    np.savetxt(folder / "label_hot.txt", lall, fmt="%d")
    np.savetxt(folder / "y_vector.txt", yall, fmt="%d")
    suffix = f"_{tag}" if tag else ""
    for stem, rows in parts.items():
        np.savetxt(folder / f"{stem}{suffix}.txt", rows, fmt="%d")
    return folder


def _assert_names_file(info, name):
    assert name in str(info.value), f"message does not name {name}: {info.value}"


# ---------------------------------------------------------------------------------------- coco


def test_coco_mini_pairs_captions_and_images(coco, coco_mini_root):
    assert len(coco) == 159 and coco.labels.shape == (159, 80) and len(coco.class_names) == 80
    assert all(len(caps) == 5 for caps in coco.texts)
    assert all(p.is_file() for p in coco.images)
    categories = json.loads((coco_mini_root / "annotations/instances_train2017.json").read_text())[
        "categories"
    ]
    assert coco.class_names == [c["name"] for c in categories]
    assert coco.labels.sum(axis=1).min() >= 1


def test_coco_mini_statistics_match_the_data_readme(coco):
    splits = np.array([m["split"] for m in coco.meta])
    assert Counter(splits.tolist()) == {"train2017": 80, "val2017": 79}
    for split, covered in (("train2017", 80), ("val2017", 78)):
        labels = coco.labels[splits == split]
        assert 3.6 <= round(float(labels.sum(axis=1).mean()), 1) <= 3.8  # the README rounds to 0.1
        assert int((labels.sum(axis=0) > 0).sum()) == covered


def test_coco_labels_are_the_instances_categories(coco, coco_mini_root):
    instances = json.loads((coco_mini_root / "annotations/instances_val2017.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    expected: dict[int, set[str]] = {}
    for ann in instances["annotations"]:
        expected.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
    for row, meta in zip(coco.labels, coco.meta, strict=True):
        if meta["split"] == "val2017":
            assert {coco.class_names[j] for j in np.flatnonzero(row)} == expected[meta["image_id"]]


def test_coco_order_and_attribution(coco):
    keys = [(m["split"], m["image_id"]) for m in coco.meta]
    assert keys == sorted(keys)
    assert all(m["license"] and m["license_url"].startswith("http") and m["flickr_url"] for m in coco.meta)


@pytest.fixture()
def coco_copy(tmp_path, coco_mini_root):
    """coco-mini's annotations (val2017 only) in tmp_path, to be damaged by a test."""
    shutil.copytree(coco_mini_root / "annotations", tmp_path / "annotations")
    return tmp_path


def test_coco_unlabeled_images_are_dropped_or_rejected(coco_copy, coco):
    path = coco_copy / "annotations/instances_val2017.json"
    instances = json.loads(path.read_text())
    victim = instances["images"][0]["id"]
    instances["annotations"] = [a for a in instances["annotations"] if a["image_id"] != victim]
    path.write_text(json.dumps(instances))
    kept = read_coco(coco_copy, ("val2017",), check_images=False)
    assert len(kept) == sum(m["split"] == "val2017" for m in coco.meta) - 1
    assert victim not in {m["image_id"] for m in kept.meta}
    with pytest.raises(DataFormatError) as info:
        read_coco(coco_copy, ("val2017",), drop_unlabeled=False, check_images=False)
    _assert_names_file(info, "instances_val2017.json")
    assert "drop_unlabeled" in str(info.value)


def test_coco_missing_and_broken_files(coco_copy):
    (coco_copy / "annotations/captions_val2017.json").unlink()
    with pytest.raises(DataNotFoundError) as info:
        read_coco(coco_copy, ("val2017",))
    _assert_names_file(info, "captions_val2017.json")
    (coco_copy / "annotations/captions_val2017.json").write_text('{"images": [')
    with pytest.raises(DataFormatError) as info:
        read_coco(coco_copy, ("val2017",))
    _assert_names_file(info, "captions_val2017.json")


def test_coco_missing_images_are_reported(coco_copy):
    with pytest.raises(DataNotFoundError, match="check_images=False"):
        read_coco(coco_copy, ("val2017",))


# ---------------------------------------------------------------------------------------- DCMH / MIRFlickr


def test_mirflickr_shapes_and_labels(mirflickr, mirflickr_root):
    assert mirflickr.labels.shape == (20015, 24) and mirflickr.bow.shape == (20015, 1386)
    assert mirflickr.labels.dtype == np.uint8 and mirflickr.bow.dtype == np.uint8
    np.testing.assert_array_equal(
        mirflickr.labels, np.loadtxt(mirflickr_root / "all_labels.txt", dtype=np.uint8)
    )
    assert mirflickr.images is None  # the data has no images
    assert mirflickr.meta[0]["image_id"] == "mirflickr/im1.jpg"
    assert len(mirflickr.texts) == 20015 and len(mirflickr.vocabulary) == 1386


def test_mirflickr_class_names_match_labels_annotation(mirflickr, mirflickr_root):
    assert mirflickr.class_names == MIRFLICKR_CLASSES
    lines = (mirflickr_root / "labels_annotation.txt").read_text().splitlines()
    for row, line in zip(mirflickr.labels[:2000], lines[:2000], strict=True):
        assert {mirflickr.class_names[j] for j in np.flatnonzero(row)} == set(line.split(","))


def test_mirflickr_vocabulary_names_the_bow_columns(mirflickr):
    for i in range(0, 20015, 997):
        assert {mirflickr.vocabulary[j] for j in np.flatnonzero(mirflickr.bow[i])} == set(mirflickr.texts[i])


def test_dcmh_wrong_key_lists_the_keys_present(tmp_path, mir50):
    lall, yall, _ = mir50
    folder = _write_dcmh(tmp_path / "d", lall, yall, lkey="labels")
    with pytest.raises(DataFormatError) as info:
        read_dcmh_mat(folder)
    _assert_names_file(info, "mir-lall.mat")
    assert "'LAll'" in str(info.value) and "['labels']" in str(info.value)


def test_dcmh_label_text_count_mismatch(tmp_path, mir50):
    lall, yall, lines = mir50
    with pytest.raises(DataFormatError) as info:
        read_dcmh_mat(_write_dcmh(tmp_path / "a", lall, yall[:49]))
    _assert_names_file(info, "mir-yall.mat")
    assert "49" in str(info.value) and "50" in str(info.value)
    with pytest.raises(DataFormatError) as info:
        read_dcmh_mat(_write_dcmh(tmp_path / "b", lall, yall, lines["all_tags.txt"][:48]))
    _assert_names_file(info, "all_tags.txt")


def test_dcmh_rows_without_labels(tmp_path, mir50):
    lall, yall, lines = mir50
    lall = lall.copy()
    lall[[3, 7, 11]] = 0
    folder = _write_dcmh(tmp_path / "d", lall, yall, lines["all_tags.txt"])
    with pytest.raises(DataFormatError) as info:
        read_dcmh_mat(folder)
    _assert_names_file(info, "mir-lall.mat")
    assert (
        "3 of 50" in str(info.value) and "20,015" in str(info.value) and "drop_unlabeled" in str(info.value)
    )
    kept = read_dcmh_mat(folder, drop_unlabeled=True)
    assert len(kept) == 47 and kept.texts[3] == lines["all_tags.txt"][4].split(",")
    np.testing.assert_array_equal(kept.bow, np.delete(yall, [3, 7, 11], axis=0))


def test_dcmh_small_set_with_features_and_generic_names(tmp_path, mir50):
    lall, yall, lines = mir50
    folder = _write_dcmh(tmp_path / "d", lall, yall, lines["all_tags.txt"])
    features = yall[:, :16].astype(np.float32)  # stand-in features: real values, right row count
    sio.savemat(folder / "mir-iall.mat", {"IAll": features})
    data = read_dcmh_mat(folder)
    np.testing.assert_array_equal(data.images, features)
    assert data.class_names[:2] == ["class_0", "class_1"]
    np.testing.assert_array_equal(data.subset([5, 2]).images, features[[5, 2]])


def test_dcmh_names_bow_columns_from_tags_when_they_match(tmp_path, mir50):
    lall, yall, lines = mir50
    used = yall[:, yall.any(axis=0)]  # a 50-row release only has the columns its rows use
    data = read_dcmh_mat(_write_dcmh(tmp_path / "a", lall, used, lines["all_tags.txt"]))
    for row, tags in zip(data.bow, lines["all_tags.txt"], strict=True):
        assert {data.vocabulary[j] for j in np.flatnonzero(row)} == set(tags.split(","))
    shuffled = lines["all_tags.txt"][1:] + lines["all_tags.txt"][:1]
    with pytest.warns(UserWarning, match="all_tags.txt does not name the columns"):
        data = read_dcmh_mat(_write_dcmh(tmp_path / "b", lall, used, shuffled))
    assert data.vocabulary is None and data.texts[0] == shuffled[0].split(",")


def test_dcmh_missing_file_and_v73_files(tmp_path, mir50):
    lall, yall, _ = mir50
    folder = _write_dcmh(tmp_path / "d", lall, yall)
    (folder / "mir-yall.mat").unlink()
    with pytest.raises(DataNotFoundError) as info:
        read_dcmh_mat(folder)
    _assert_names_file(info, "mir-yall.mat")
    # A MATLAB v7.3 header (version 0x0200): scipy cannot read these.
    header = b"MATLAB 7.3 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
    (folder / "mir-yall.mat").write_bytes(header + b"\0" * 512)
    with pytest.raises(CmhashError) as info:
        read_dcmh_mat(folder)
    _assert_names_file(info, "mir-yall.mat")
    assert "h5py" in str(info.value)


# ---------------------------------------------------------------------------------------- CLIP pipeline


@pytest.mark.parametrize("caption_shape", ["row", "column", "one string"])
def test_clip_pipeline_reader_on_coco_mini_content(tmp_path, coco, coco_mini_root, caption_shape):
    folder = _write_clip(tmp_path / "clip", coco, coco_mini_root, caption_shape=caption_shape)
    data = read_clip_mat(folder, image_root=coco_mini_root, class_names=coco.class_names)
    np.testing.assert_array_equal(data.labels, coco.labels)
    assert data.texts == (coco.texts if caption_shape != "one string" else [[c[0]] for c in coco.texts])
    assert data.images == coco.images
    assert data.name == "clip"


def test_clip_pipeline_caption_txt(tmp_path, coco, coco_mini_root):
    folder = _write_clip(tmp_path / "nus", coco, coco_mini_root)
    (folder / "caption.mat").unlink()
    (folder / "caption.txt").write_text("\n".join(c[0] for c in coco.texts) + "\n", encoding="utf-8")
    data = read_clip_mat(folder, image_root=coco_mini_root)
    assert data.texts == [[c[0]] for c in coco.texts]


def test_clip_pipeline_errors(tmp_path, coco, coco_mini_root):
    folder = _write_clip(tmp_path / "clip", coco, coco_mini_root, label_key="label")
    with pytest.raises(DataFormatError) as info:
        read_clip_mat(folder, image_root=coco_mini_root)
    _assert_names_file(info, "label.mat")
    assert "'category'" in str(info.value) and "['label']" in str(info.value)
    assert len(read_clip_mat(folder, image_root=coco_mini_root, label_key="label")) == 159

    short = coco.subset(np.arange(158))
    cells = np.empty(len(short), dtype=object)
    cells[:] = [np.array(c, dtype=object) for c in short.texts]
    sio.savemat(folder / "caption.mat", {"caption": cells})
    with pytest.raises(DataFormatError) as info:
        read_clip_mat(folder, image_root=coco_mini_root, label_key="label")
    _assert_names_file(info, "caption.mat")
    assert "158" in str(info.value) and "159" in str(info.value)

    with pytest.raises(DataNotFoundError) as info:
        read_clip_mat(_write_clip(tmp_path / "c2", coco, coco_mini_root), image_root=tmp_path)
    _assert_names_file(info, "index.mat")
    (tmp_path / "c2" / "label.mat").unlink()
    with pytest.raises(DataNotFoundError) as info:
        read_clip_mat(tmp_path / "c2")
    _assert_names_file(info, "label.mat")


# ---------------------------------------------------------------------------------------- DCPH text

_PARTS_1BASED = {
    "test_ind": np.arange(1, 11),
    "database_ind": np.arange(11, 51),
    "train_ind": np.arange(11, 31),
}


def test_dcph_text_reader_on_mirflickr_rows(tmp_path, mir50):
    lall, yall, lines = mir50
    folder = _write_dcph(tmp_path / "dcph", lall, yall, lines["all_imgs.txt"], _PARTS_1BASED)
    data, split = read_dcph_text(folder, check_images=False)
    np.testing.assert_array_equal(data.labels, lall)
    np.testing.assert_array_equal(data.bow, yall)
    assert data.images[0].name == "im1.jpg" and data.split is split
    np.testing.assert_array_equal(split.query, np.arange(0, 10))
    np.testing.assert_array_equal(split.database, np.arange(10, 50))
    np.testing.assert_array_equal(split.train, np.arange(10, 30))
    assert split.val.size == 0


def test_dcph_zero_based_index_files_are_rejected(tmp_path, mir50):
    lall, yall, lines = mir50
    zero_based = {k: v - 1 for k, v in _PARTS_1BASED.items()}
    folder = _write_dcph(tmp_path / "dcph", lall, yall, lines["all_imgs.txt"], zero_based)
    with pytest.raises(DataFormatError) as info:
        read_dcph_text(folder, check_images=False)
    assert "_ind_ph.txt" in str(info.value) and "0-based" in str(info.value)
    assert "one_based=False" in str(info.value)
    _, split = read_dcph_text(folder, one_based=False, check_images=False)
    np.testing.assert_array_equal(split.query, np.arange(0, 10))


def test_dcph_index_out_of_range_and_count_mismatch(tmp_path, mir50):
    lall, yall, lines = mir50
    parts = dict(_PARTS_1BASED, train_ind=np.array([11, 51]))
    folder = _write_dcph(tmp_path / "a", lall, yall, lines["all_imgs.txt"], parts, tag="")
    with pytest.raises(DataFormatError) as info:
        read_dcph_text(folder, check_images=False)
    _assert_names_file(info, "train_ind.txt")
    assert "51" in str(info.value)
    folder = _write_dcph(tmp_path / "b", lall[:40], yall, lines["all_imgs.txt"], _PARTS_1BASED)
    with pytest.raises(DataFormatError) as info:
        read_dcph_text(folder, check_images=False)
    _assert_names_file(info, "label_hot.txt")


def test_dcph_several_index_sets_need_a_tag(tmp_path, mir50):
    lall, yall, lines = mir50
    folder = _write_dcph(tmp_path / "d", lall, yall, lines["all_imgs.txt"], _PARTS_1BASED, tag="ph")
    _write_dcph(
        folder, lall, yall, lines["all_imgs.txt"], {k: v[::-1] for k, v in _PARTS_1BASED.items()}, tag=""
    )
    with pytest.raises(DataFormatError, match="split_tag"):
        read_dcph_text(folder, check_images=False)
    _, split = read_dcph_text(folder, split_tag="", check_images=False)
    np.testing.assert_array_equal(split.query, np.arange(9, -1, -1))


# ---------------------------------------------------------------------------------------- dataset type


def test_paired_dataset_checks_alignment(mir50):
    lall, yall, lines = mir50
    with pytest.raises(DataFormatError, match="texts has 49 rows but labels have 50"):
        PairedDataset("x", lall, MIRFLICKR_CLASSES, texts=[[t] for t in lines["all_tags.txt"][:49]])
    with pytest.raises(DataFormatError, match="bow has 40 rows but labels have 50"):
        PairedDataset("x", lall, MIRFLICKR_CLASSES, bow=yall[:40])
    with pytest.raises(DataFormatError, match="23 class names"):
        PairedDataset("x", lall, MIRFLICKR_CLASSES[:23])
    with pytest.raises(DataFormatError, match="only 0 and 1"):
        PairedDataset("x", lall * 2, MIRFLICKR_CLASSES)


def test_subset_keeps_fields_aligned(coco):
    picked = coco.subset(np.array([158, 0, 42]))
    assert len(picked) == 3
    for k, i in enumerate([158, 0, 42]):
        assert picked.images[k] == coco.images[i] and picked.texts[k] == coco.texts[i]
        assert picked.meta[k] == coco.meta[i]
        np.testing.assert_array_equal(picked.labels[k], coco.labels[i])
    with pytest.raises(InvalidInputError, match="159"):
        coco.subset([159])


# ---------------------------------------------------------------------------------------- registry


def test_load_dataset_by_name(data_root):
    assert len(load_dataset("coco-mini", root=data_root)) == 159
    assert load_dataset("mirflickr25k", root=data_root).bow.shape == (20015, 1386)


def test_load_dataset_detects_folder_layouts(tmp_path, coco, coco_mini_root, mir50):
    lall, yall, lines = mir50
    assert len(load_dataset(coco_mini_root)) == 159
    clip = load_dataset(_write_clip(tmp_path / "clip", coco, coco_mini_root, absolute=True))
    assert clip.name == "clip" and clip.texts == coco.texts and clip.images == coco.images
    assert len(load_dataset(_write_dcmh(tmp_path / "dcmh", lall, yall))) == 50
    folder = _write_dcph(tmp_path / "dcph", lall, yall, lines["all_imgs.txt"], _PARTS_1BASED)
    with pytest.raises(DataNotFoundError, match="images_name.txt"):  # MIRFlickr has no images here
        load_dataset(folder)
    dcph = load_dataset(folder, check_images=False)
    assert dcph.split is not None and dcph.split.query.size == 10
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError) as info:
        load_dataset(tmp_path / "empty")
    for layout in ("COCO JSON", "DCMH/UCCH", "CLIP pipeline", "DCPH text"):
        assert layout in str(info.value)
    with pytest.raises(DataNotFoundError, match="coco-mini"):
        load_dataset("no-such-dataset")
    with pytest.raises(DataNotFoundError, match="--data"):
        load_dataset("coco-mini", root=tmp_path)


def test_default_data_root(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DATA_DIR", tmp_path)
    assert default_data_root() == tmp_path
    monkeypatch.setattr(constants, "DATA_DIR", tmp_path / "nope")
    with pytest.raises(DataNotFoundError, match="CMHASH_DATA"):
        default_data_root()
    monkeypatch.setattr(constants, "DATA_DIR", None)
    (tmp_path / "work" / "repo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "repo")
    monkeypatch.setattr(constants, "REPO_ROOT", tmp_path / "elsewhere" / "repo")
    with pytest.raises(DataNotFoundError, match="--data-root PATH"):
        default_data_root()
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    assert default_data_root() == (tmp_path / "work" / "shared" / "data").resolve()


# ------------------------------------------------------------------------- loose folder + text file


def test_folder_pairs_read_photos_and_captions_by_the_runtime_rule(tmp_path, coco):
    """`--images DIR --texts FILE` (export checks, demo) see what `cmhash encode` sees: sub-folders too."""
    from cmhash.runtime.input_files import image_folder
    from cmhash.zoo.data.loose import folder_pairs

    (tmp_path / "photos" / "sub").mkdir(parents=True)
    shutil.copy(coco.images[0], tmp_path / "photos" / "b.JPG")
    shutil.copy(coco.images[1], tmp_path / "photos" / "sub" / "a.jpg")
    (tmp_path / "captions.txt").write_text("a cat\n\nthe sea\nnot paired\n", encoding="utf-8")
    pairs = folder_pairs(tmp_path / "photos", tmp_path / "captions.txt", "mine")
    assert pairs.images == image_folder(tmp_path / "photos") == [tmp_path / "photos" / "b.JPG",
                                                                tmp_path / "photos" / "sub" / "a.jpg"]
    # every caption is kept (before: "not paired" was dropped, only min(images, captions) were checked)
    assert pairs.texts == [["a cat", "not paired"], ["the sea"]] and pairs.name == "mine" and len(pairs) == 2


def test_loose_pairs_keep_every_image_when_captions_are_fewer(coco):
    from cmhash.zoo.data.loose import loose_pairs

    pairs = loose_pairs(list(coco.images[:5]), ["one caption", "two"])
    assert len(pairs.images) == 5 and pairs.texts == [["one caption"], ["two"], [], [], []]
