"""`hilif-prep demo --faces DIR`: the user's own photos as more demo identities (one person per photo, the subfolder
is the person's split)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hilif.pipeline.demo import DemoError, load_demo_json
from hilif.pipeline.demo import render as demo_render
from hilif.pipeline.demo.plan import check_sources, split_pairs
from hilif.pipeline.demo.render import FaceSourceError, Identity, folder_identities, make_portrait

T1 = demo_render.package_file("insightface", "data/images/t1.jpg")
pytestmark = pytest.mark.skipif(T1 is None, reason="insightface's t1.jpg is not installed")


def _crop_t1(path: Path, centre: tuple[int, int], half: int = 150) -> Path:
    """A photo of one t1.jpg person (neighbours may show at the edges, as in a real snapshot)."""
    img = Image.open(T1).convert("RGB")
    x, y = centre
    path.parent.mkdir(parents=True, exist_ok=True)
    img.crop((x - half, y - half, x + half, y + half)).save(path)
    return path


def test_folder_identities_names_splits_and_files(tmp_path):
    _crop_t1(tmp_path / "train" / "anna.jpg", (320, 220))
    _crop_t1(tmp_path / "train" / "bo.PNG", (934, 131))
    _crop_t1(tmp_path / "test" / "cy.jpeg", (503, 348))
    (tmp_path / "train" / "notes.txt").write_text("not a photo")  # other files are ignored
    ids = folder_identities(tmp_path)
    assert {s: [i.name for i in v] for s, v in ids.items()} == {
        "train": ["own-anna", "own-bo"],
        "val": [],
        "test": ["own-cy"],
    }
    for i in ids["train"] + ids["test"]:
        assert i.package == "" and i.near is None and i.file() is not None and i.file().is_file()
    # merged after the built-in people of each split
    merged = demo_render.available_identities(ids)
    assert [i.name for i in merged["test"]][-1] == "own-cy"
    assert len(merged["train"]) == len(demo_render.available_identities()["train"]) + 2


@pytest.mark.parametrize(
    "layout,words",
    [
        ({"people/a.jpg": True}, "unknown subfolder"),
        ({"train/a.txt": False}, "no photos"),
        ({"train/a.jpg": True, "test/a.png": True}, "same file name"),
    ],
)
def test_folder_identities_bad_layouts_name_the_fix(tmp_path, layout, words):
    for rel, photo in layout.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if photo:
            _crop_t1(p, (320, 220))
        else:
            p.write_text("x")
    with pytest.raises(FaceSourceError, match=words):
        folder_identities(tmp_path)
    with pytest.raises(FaceSourceError, match="must be a folder"):
        folder_identities(tmp_path / "missing")


def _people(train: int, val: int, test: int) -> dict[str, list[Identity]]:
    def n(split: str, k: int) -> list[Identity]:
        return [Identity(f"{split}{i}", "", f"/nowhere/{split}{i}.jpg", None) for i in range(k)]

    return {"train": n("train", train), "val": n("val", val), "test": n("test", test)}


@pytest.mark.parametrize("counts", [(5, 2, 2), (13, 4, 4), (7, 2, 5), (30, 3, 3)])
def test_check_sources_suggests_the_smallest_sources_that_film_everyone(counts):
    people = _people(*counts)

    def fits(n: int) -> bool:
        c = split_pairs(n // 2)
        return all(2 * c[s] >= len(people[s]) for s in people)

    smallest = next(n for n in range(6, 1001, 2) if fits(n))
    check_sources(smallest, people)  # enough: no error
    if smallest > 6:
        with pytest.raises(DemoError, match=rf"--sources {smallest} or more"):
            check_sources(6, people)
        with pytest.raises(DemoError, match=rf"--sources {smallest} or more"):
            check_sources(smallest - 2, people)


def test_portrait_of_own_photo_is_its_largest_face(tmp_path):
    # two people side by side, the right one enlarged: the portrait must show the enlarged one
    left = Image.open(_crop_t1(tmp_path / "l.png", (320, 220), 110))
    right = Image.open(_crop_t1(tmp_path / "r.png", (934, 131), 110)).resize((330, 330))
    photo = Image.new("RGB", (220 + 330, 330), (90, 90, 90))
    photo.paste(left, (0, 60))
    photo.paste(right, (220, 0))
    path = tmp_path / "train" / "two.png"
    path.parent.mkdir()
    photo.save(path)
    own = make_portrait(Identity("own-two", "", str(path), None))
    boxes = demo_render.detect_faces(np.asarray(photo))
    assert len(boxes) == 2
    big = max((b for b, _ in boxes), key=lambda b: b[2] - b[0])
    chosen = make_portrait(Identity("big", "", str(path), tuple(((big[:2] + big[2:]) / 2).tolist())))
    np.testing.assert_array_equal(own.image, chosen.image)
    assert own.lm68.shape == (68, 2)


def test_unreadable_or_faceless_photo_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(FaceSourceError, match="broken.jpg: cannot read"):
        make_portrait(Identity("own-broken", "", str(bad), None))
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (120, 110, 100)).save(blank)
    with pytest.raises(FaceSourceError, match="wall.png: dlib finds no face"):
        make_portrait(Identity("own-wall", "", str(blank), None))


def _prep(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("hilif-prep")
    return subprocess.run([str(exe), "demo", *args], capture_output=True, text=True, timeout=300)


TINY_ARGS = ["--seconds", "0.3", "--fps", "10", "--quality", "c40", "--workers", "1"]


def test_cli_films_own_photos_and_refuses_too_few_sources(tmp_path):
    faces = tmp_path / "faces"
    _crop_t1(faces / "test" / "rachel.jpg", (121, 336))
    out = tmp_path / "demo"
    # 3 test people need 2 test pairs: 16 sources, not the 6 asked for; nothing is written
    r = _prep("--out", str(out), "--faces", str(faces), "--sources", "6", *TINY_ARGS)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--sources 16 or more" in r.stderr
    assert not out.exists()
    r = _prep("--out", str(out), "--faces", str(faces / "nope"), *TINY_ARGS)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr

    r = _prep("--out", str(out), "--faces", str(faces), "--sources", "16", *TINY_ARGS)
    assert r.returncode == 0, r.stderr
    meta = load_demo_json(out)
    assert meta["photos"]["own-rachel"] == str((faces / "test" / "rachel.jpg").resolve())
    assert meta["identities"]["test"][-1] == "own-rachel"
    filmed = {s["identity"]: s["split"] for s in meta["sources"]}
    # every identity has a video, in its own split only
    assert set(filmed) == {n for ids in meta["identities"].values() for n in ids}
    assert filmed["own-rachel"] == "test"
    splits = {s: json.loads((out / "splits" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert {s: len(p) for s, p in splits.items()} == split_pairs(8)
