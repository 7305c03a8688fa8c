"""A generated corpus of broken and hostile uploads, each with the outcome the service must give.

Built in memory in well under a second (nothing is downloaded or written). ``EXPECTED`` maps a case
name to what ``POST /v1/score`` must answer when the file is sent as one multipart photo: ``("ok",
FORMAT)`` (scored, with the sniffed format), or ``("error", CODE)`` (the photo's own per-file error
code, the request still 200). Whole-request outcomes (4xx) are asserted separately.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Callable

import numpy as np
from PIL import Image, PngImagePlugin

SIZE = (96, 64)
BIG_CHUNK_BYTES = 10 * 1024 * 1024  # the 10 MB EXIF/ICC/text chunk
GIF_FRAMES = 10_000


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _photo(size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def valid_jpeg() -> bytes:
    return _encode(_photo(), "JPEG", quality=85)


def valid_png() -> bytes:
    return _encode(_photo(), "PNG")


def valid_webp() -> bytes:
    return _encode(_photo(), "WEBP", quality=80)


def valid_heic() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return _encode(_photo(), "HEIF", quality=80)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (8-bit grey) with one small IDAT: a bomb by its header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def corrupt_huffman_jpeg() -> bytes:
    """A JPEG whose first Huffman table (DHT) has its code counts and symbols overwritten."""
    data = bytearray(valid_jpeg())
    start = data.index(b"\xff\xc4")
    length = struct.unpack(">H", data[start + 2:start + 4])[0]
    # Class/id byte kept; 16 code-length counts all 0xFF (an impossible code tree), symbols garbled.
    for offset in range(start + 5, start + 2 + length):
        data[offset] = 0xFF if offset < start + 5 + 16 else (offset * 37) & 0xFF
    return bytes(data)


def gif_with_frames(frames: int = GIF_FRAMES) -> bytes:
    """An animated GIF of ``frames`` 4x4 frames (alternating colours, so no frame is merged away)."""
    first = Image.new("P", (4, 4), 0)
    first.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    others = []
    for index in range(1, frames):
        frame = Image.new("P", (4, 4), index % 2)
        frame.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        others.append(frame)
    return _encode(first, "GIF", save_all=True, append_images=others, duration=10, loop=0, optimize=False, disposal=1)


def cmyk_jpeg() -> bytes:
    return _encode(_photo().convert("CMYK"), "JPEG", quality=90)


def png_16_bit() -> bytes:
    values = (np.arange(SIZE[0] * SIZE[1], dtype=np.uint32).reshape(SIZE[1], SIZE[0]) * 7 % 65536).astype(np.uint16)
    return _encode(Image.fromarray(values), "PNG")


def tiff_16_bit() -> bytes:
    values = np.random.default_rng(1).integers(0, 65536, (SIZE[1], SIZE[0])).astype(np.uint16)
    return _encode(Image.fromarray(values), "TIFF")


def palette_with_transparency() -> bytes:
    image = _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def jpeg_with_big_icc() -> bytes:
    return _encode(_photo(), "JPEG", quality=85, icc_profile=b"\x00" * BIG_CHUNK_BYTES)


def jpeg_with_big_exif() -> bytes:
    # EXIF lives in one APP1 segment of at most 64 KB; a 10 MB one is impossible to write legally,
    # so this is the largest legal EXIF (the 10 MB case is the ICC profile and the PNG text chunk).
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    return _encode(_photo(), "JPEG", quality=85, exif=exif)


def png_with_big_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * BIG_CHUNK_BYTES)
    return _encode(_photo(), "PNG", pnginfo=info)


def png_with_big_compressed_text() -> bytes:
    """A zTXt chunk that inflates to 10 MB (a text-chunk bomb)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * BIG_CHUNK_BYTES, zip=True)
    return _encode(_photo(), "PNG", pnginfo=info)


def tall_thin_png() -> bytes:
    return _encode(Image.new("RGB", (1, 60_000), (200, 30, 30)), "PNG")


SVG = b"""<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">
<script>alert(1)</script><image href="file:///etc/passwd"/><rect width="100%" height="100%" fill="red"/></svg>"""
PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >> endobj
trailer << /Root 1 0 R >>
%%EOF
"""
TEXT_NAMED_JPG = b"This is not a photo, whatever its name (holiday.jpg) says.\n" * 20


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", valid_jpeg())
    return buffer.getvalue()


def jpeg_zip_polyglot() -> bytes:
    """A valid JPEG with a ZIP appended: a JPEG to an image reader, a ZIP to an unzipper."""
    return valid_jpeg() + zip_archive()


def gif_js_polyglot() -> bytes:
    """GIF89a header that is also the start of a JavaScript comment; the image data is garbage."""
    return b"GIF89a/*\x00\x00\x80\x00\x00*/=alert(1);//" + b"\x00" * 64


def html_named_png() -> bytes:
    return b"<html><script>alert(document.cookie)</script></html>"


def _truncated(build: Callable[[], bytes], keep: float = 0.5) -> Callable[[], bytes]:
    def cut() -> bytes:
        data = build()
        return data[: int(len(data) * keep)]

    return cut


# name -> (builder, expected outcome, file name sent)
CASES: dict[str, tuple[Callable[[], bytes], tuple[str, str], str]] = {
    "zero_bytes": (lambda: b"", ("error", "unsupported_format"), "empty.jpg"),
    "truncated_jpeg": (_truncated(valid_jpeg), ("error", "decode_failed"), "cut.jpg"),
    "truncated_png": (_truncated(valid_png), ("error", "decode_failed"), "cut.png"),
    "truncated_webp": (_truncated(valid_webp), ("error", "decode_failed"), "cut.webp"),
    "truncated_heic": (_truncated(valid_heic), ("error", "decode_failed"), "cut.heic"),
    "header_only_jpeg": (lambda: valid_jpeg()[:40], ("error", "decode_failed"), "header.jpg"),
    "corrupt_huffman_jpeg": (corrupt_huffman_jpeg, ("error", "decode_failed"), "huffman.jpg"),
    "png_bomb_100000x100000": (lambda: png_declaring(100_000, 100_000), ("error", "too_many_pixels"), "bomb.png"),
    "png_bomb_just_over_limit": (lambda: png_declaring(8001, 8000), ("error", "too_many_pixels"), "bomb2.png"),
    "png_1x60000": (tall_thin_png, ("ok", "PNG"), "thin.png"),
    "gif_10000_frames": (gif_with_frames, ("ok", "GIF"), "anim.gif"),
    "cmyk_jpeg": (cmyk_jpeg, ("ok", "JPEG"), "cmyk.jpg"),
    "png_16_bit": (png_16_bit, ("ok", "PNG"), "16.png"),
    "tiff_16_bit": (tiff_16_bit, ("ok", "TIFF"), "16.tif"),
    "palette_with_transparency": (palette_with_transparency, ("ok", "PNG"), "p.png"),
    "jpeg_10mb_icc": (jpeg_with_big_icc, ("ok", "JPEG"), "icc.jpg"),
    "jpeg_largest_exif": (jpeg_with_big_exif, ("ok", "JPEG"), "exif.jpg"),
    "png_10mb_text_chunk": (png_with_big_text, ("ok", "PNG"), "text.png"),
    # Pillow refuses a text chunk that inflates past its 1 MB limit (MAX_TEXT_CHUNK) rather than inflate it.
    "png_10mb_ztxt_bomb": (png_with_big_compressed_text, ("error", "decode_failed"), "ztxt.png"),
    "svg": (lambda: SVG, ("error", "unsupported_format"), "image.svg"),
    "pdf": (lambda: PDF, ("error", "unsupported_format"), "scan.pdf"),
    "text_named_jpg": (lambda: TEXT_NAMED_JPG, ("error", "unsupported_format"), "holiday.jpg"),
    "zip": (zip_archive, ("error", "unsupported_format"), "photos.zip"),
    "jpeg_zip_polyglot": (jpeg_zip_polyglot, ("ok", "JPEG"), "poly.jpg"),
    "gif_js_polyglot": (gif_js_polyglot, ("error", "unsupported_format"), "poly.gif"),
    "html_named_png": (html_named_png, ("error", "unsupported_format"), "page.png"),
}


def build_all() -> dict[str, bytes]:
    return {name: build() for name, (build, _, _) in CASES.items()}


def _flagged_clip() -> bytes:
    from videos import GREY, RED, clip

    return clip([GREY] * 3 + [RED] * 2 + [GREY] * 3, fps=10)


def _from_clip(change: Callable[[bytes], bytes]) -> Callable[[], bytes]:
    return lambda: change(_flagged_clip())


def _video_cases() -> dict[str, tuple[Callable[[], bytes], tuple[str, str], str]]:
    """Hostile videos (built by tests/videos.py); at most two videos go in one request, so these are sent
    one by one rather than with the whole photo corpus."""
    import videos

    return {
        "video_truncated": (_from_clip(lambda v: v[: len(v) // 2]), ("error", "decode_failed"), "cut.mp4"),
        "video_header_only": (_from_clip(lambda v: v[:200]), ("error", "decode_failed"), "header.mp4"),
        "video_declaring_ten_hours": (_from_clip(lambda v: videos.declaring_duration(v, videos.TEN_HOURS_S)),
                                      ("error", "too_long"), "long.mp4"),
        "video_16k_frame": (videos.sixteen_k_frame, ("error", "too_many_pixels"), "16k.mp4"),
        "video_zero_frames": (videos.zero_frames, ("error", "unsupported_format"), "empty.mp4"),
        "video_audio_only": (videos.audio_only, ("error", "unsupported_format"), "voice.m4a"),
        "video_2000_streams": (_from_clip(videos.many_streams), ("error", "decode_failed"), "streams.mp4"),
        "video_corrupt_packets": (_from_clip(videos.corrupt_packets), ("ok", "MP4"), "damaged.mp4"),
    }


VIDEO_CASES = _video_cases()
