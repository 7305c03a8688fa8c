"""The stored copy of a flagged photo (or of a video's flagged frames), in a form the reviewer's browser can show.

Browsers show JPEG, PNG, WebP, GIF and BMP as sent, so those are stored byte for byte. HEIC (what
iPhones save) and TIFF they cannot show: those are stored as a JPEG of the photo as displayed (EXIF
orientation applied), at a quality where re-encoding is invisible, so the reviewer sees the photo
instead of a broken image. The submission's SHA-256 is always that of the photo as sent.
"""

from __future__ import annotations

import io

from PIL import ImageOps

from flexguard.inference.engine import ImageScore
from flexguard.inference.strip import REVIEW_FRAME_HEIGHT, kept_frames, strip
from flexguard.models.preprocessing import open_image, to_rgb

BROWSER_MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                       "GIF": "image/gif", "BMP": "image/bmp"}
CONVERTED_MEDIA_TYPE = "image/jpeg"
# Visually lossless for photos; a 12 MP phone photo comes out at about 3-5 MB.
CONVERTED_QUALITY = 92


def viewable(data: bytes, score: ImageScore) -> tuple[bytes, str]:
    """The bytes to store for a reviewer, and their media type. ``data`` was already scored, so it decodes.

    A video is never stored: only a JPEG strip of its flagged frames (its worst frame if none is flagged),
    whose layout ``records.stored_result`` keeps beside the scores.
    """
    if score.video is not None:
        return strip(kept_frames(score.video), REVIEW_FRAME_HEIGHT)[0], CONVERTED_MEDIA_TYPE
    media_type = BROWSER_MEDIA_TYPES.get(score.format)
    if media_type is not None:
        return data, media_type
    image = to_rgb(ImageOps.exif_transpose(open_image(data)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=CONVERTED_QUALITY)
    return buffer.getvalue(), CONVERTED_MEDIA_TYPE
