"""The cheap photo check: a phone JPEG sent on as it is never has its pixels decoded,
yet cut, damaged, oversized and rotated photos are handled as before.

No timings here (see the report of the change for those): the tests prove which path
is taken by recording the size of every image Pillow decodes.
"""

from __future__ import annotations

import io
from functools import cache

import pytest
from PIL import Image, ImageFile

from bot import messages
from bot.catalog import ImageRule
from bot.media import MediaError, prepare_image
from tests.helpers import image_bytes

MB = 1024 * 1024
UNREADABLE = messages.image_unreadable("photo")
ANY_MODEL = ImageRule()


@cache
def phone_photo() -> bytes:
    """A 12-megapixel JPEG, as a phone takes it."""
    return image_bytes(4000, 3000)


def _prepare(data: bytes, rule: ImageRule = ANY_MODEL):
    return prepare_image(data, rule, max_input_bytes=20 * MB)


def _jpeg(width: int, height: int, **save) -> bytes:
    image = Image.open(io.BytesIO(image_bytes(width, height, noise=True)))
    out = io.BytesIO()
    image.save(out, "JPEG", **save)
    return out.getvalue()


@pytest.fixture
def decoded(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image whose pixels Pillow decodes (after any draft scaling);
    a test clears it once its input is made."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes


def test_phone_photo_goes_out_byte_for_byte_without_a_full_decode(decoded):
    photo = phone_photo()
    decoded.clear()

    media = _prepare(photo)

    assert media.data is photo
    assert (media.mime, media.filename, media.width, media.height) == ("image/jpeg", "photo.jpg", 4000, 3000)
    assert all(w * h <= 4000 * 3000 // 64 for w, h in decoded), decoded  # at most 1/8 scale


@pytest.mark.parametrize("cut", ["half", "last byte", "first kilobyte of coded data"])
def test_cut_phone_photo_is_refused_as_unreadable(cut):
    photo = phone_photo()
    scan = photo.index(b"\xff\xda")
    end = {"half": len(photo) // 2, "last byte": len(photo) - 1,
           "first kilobyte of coded data": scan + 1024}[cut]

    with pytest.raises(MediaError) as refused:
        _prepare(photo[:end])

    assert str(refused.value) == UNREADABLE


def test_damaged_coded_data_is_refused():
    photo = _jpeg(800, 600)
    stuffed = photo.index(b"\xff\x00", len(photo) // 2)  # a 0xFF data byte in the scan
    damaged = photo[:stuffed + 1] + b"\xbb" + photo[stuffed + 2:]  # now an unknown marker

    with pytest.raises(MediaError, match="could not be read"):
        _prepare(damaged)


def test_second_start_of_image_is_refused():
    photo = _jpeg(800, 600)
    scan = photo.index(b"\xff\xda")

    with pytest.raises(MediaError, match="could not be read"):
        _prepare(photo[:scan] + b"\xff\xd8" + photo[scan:])


def test_header_libjpeg_cannot_use_is_refused():
    # a complete file whose first component names quantization table 3, never defined
    photo = bytearray(image_bytes(640, 480))
    sof = photo.index(b"\xff\xc0")
    photo[sof + 12] = 3  # after length, precision, size, component count: (id, sampling, table)

    with pytest.raises(MediaError, match="could not be read"):
        _prepare(bytes(photo))


@pytest.mark.parametrize("kind, save", [
    ("progressive", {"progressive": True}),
    ("restart markers", {"restart_marker_blocks": 4}),
    ("4:4:4", {"subsampling": 0}),
])
def test_other_jpeg_layouts_go_out_byte_for_byte(decoded, kind, save):
    photo = _jpeg(1600, 1200, quality=90, **save)
    decoded.clear()

    media = _prepare(photo)

    assert (media.data, media.width, media.height) == (photo, 1600, 1200)
    assert all(w * h <= 1600 * 1200 // 64 for w, h in decoded), decoded


def test_cut_progressive_jpeg_is_refused():
    photo = _jpeg(1600, 1200, progressive=True)
    with pytest.raises(MediaError, match="could not be read"):
        _prepare(photo[:len(photo) * 2 // 3])


def test_data_after_the_end_of_image_is_sent_as_it_came():
    # some phones append their own data after the JPEG's end-of-image marker
    photo = _jpeg(800, 600) + b"vendor trailer\x00" * 20
    assert _prepare(photo).data == photo


def test_rotated_phone_photo_comes_back_upright():
    # EXIF orientation 6: stored landscape, shown portrait; the vertical stripes
    # image_bytes draws become horizontal once turned
    photo = image_bytes(4000, 3000, exif_orientation=6)

    media = _prepare(photo)

    sent = Image.open(io.BytesIO(media.data))
    assert (sent.format, sent.size, media.width, media.height) == ("JPEG", (3000, 4000), 3000, 4000)
    assert sent.getexif().get(0x0112, 1) == 1
    sent.draft("RGB", (750, 1000))
    row = sent.crop((0, 100, sent.width, 101)).convert("L").getextrema()
    column = sent.crop((100, 0, 101, sent.height)).convert("L").getextrema()
    assert row[1] - row[0] < 30 < column[1] - column[0]


def test_upright_orientation_tag_keeps_the_original_bytes():
    photo = image_bytes(640, 480, exif_orientation=1)
    assert _prepare(photo).data is photo


def test_size_rules_use_the_upright_size():
    # stored 1200×299, shown 299×1200: too small, reported as the user sees it
    with pytest.raises(MediaError, match="299×1200 px"):
        _prepare(image_bytes(1200, 299, exif_orientation=6))
    # stored 1500×600, shown 600×1500: within master's 1:2.5 .. 2.5:1 (exactly 1:2.5)
    media = _prepare(image_bytes(1500, 600, exif_orientation=8), ImageRule(aspect=(1 / 2.5, 2.5)))
    assert (media.width, media.height) == (600, 1500)


def test_pixel_bomb_is_refused_before_any_decode(decoded):
    # a small JPEG whose frame header claims 8000×6000 (48 MP, over the 40 MP ceiling)
    photo = bytearray(image_bytes(640, 480))
    sof = photo.index(b"\xff\xc0")
    photo[sof + 5:sof + 9] = (6000).to_bytes(2, "big") + (8000).to_bytes(2, "big")
    decoded.clear()

    with pytest.raises(MediaError) as refused:
        _prepare(bytes(photo))

    assert str(refused.value) == messages.image_too_many_pixels("photo", 8000, 6000)
    assert decoded == []
