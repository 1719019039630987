"""cmhash.runtime.input_files: the one rule for a folder of photos and for a text file."""

from __future__ import annotations

import pytest

from cmhash.errors import DataFormatError, DataNotFoundError, InvalidInputError
from cmhash.runtime.input_files import IMAGE_SUFFIXES, image_folder, image_paths, read_texts


def test_a_folder_is_its_images_below_it_in_any_case_sorted(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    names = ["z.JPG", "a.png", "b/c.webp", "b/deep/d.TIFF", "notes.txt", "b/e.jpeg.bak", "b/f.gif"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "b" / "g.png").mkdir()  # a folder named like an image is not an image
    expected = sorted(tmp_path / n for n in ("z.JPG", "a.png", "b/c.webp", "b/deep/d.TIFF", "b/f.gif"))
    assert image_folder(tmp_path) == expected
    assert image_paths([tmp_path / "notes.txt", tmp_path / "b"]) == [
        tmp_path / "notes.txt", *sorted(tmp_path / n for n in ("b/c.webp", "b/deep/d.TIFF", "b/f.gif"))]
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp"} <= set(IMAGE_SUFFIXES)


def test_a_folder_without_images_and_a_missing_folder_are_typed_errors(tmp_path):
    (tmp_path / "only.txt").write_text("x")
    with pytest.raises(InvalidInputError, match=f"folder {tmp_path} holds no image files"):
        image_folder(tmp_path)
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        image_folder(tmp_path / "absent")
    with pytest.raises(InvalidInputError, match="no images given"):
        image_paths([])


def test_a_text_file_is_its_stripped_non_blank_lines_with_line_numbers(tmp_path):
    (tmp_path / "t.txt").write_text("  a dog \n\n\t\nüber\r\nlast", encoding="utf-8")
    texts, ids = read_texts(tmp_path / "t.txt")
    assert texts == ["a dog", "über", "last"] and ids.tolist() == [0, 3, 4]
    texts, ids = read_texts("-", lines=["", "x"])
    assert texts == ["x"] and ids.tolist() == [1]


def test_bad_text_files_are_typed_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such file"):
        read_texts(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="not UTF-8"):
        read_texts(tmp_path / "latin1.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(InvalidInputError, match="holds no text"):
        read_texts(tmp_path / "blank.txt")
    with pytest.raises(DataFormatError, match="cannot read"):
        read_texts(tmp_path)  # a folder
