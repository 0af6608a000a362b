"""The body of an HTTP digits request -> the core's EncodedImage/RawImage list (plus the JSON's options).

Three kinds of body, told apart by Content-Type:

- an image file's bytes (`image/png`, `image/jpeg`, any `image/*`, or `application/octet-stream`): one image;
- `multipart/form-data`: every file field is an image, in the order sent (an HTML form, `curl -F`);
- `application/json`: `{"model"?, "model_version"?, "top_k"?, "min_confidence"?, "images": [...]}`, each image `{"encoded": base64}` or
  `{"pixels": [0-255 ints] or base64, "height", "width", "already_mnist"?}` (as gRPC's Image).

Whether the bytes really are an accepted image (PNG, JPEG, BMP, GIF, TIFF, WebP) is for the decoder to say (it sniffs them); here only the
envelope is checked. Every refusal is a StatusError (or the 413/415 of HTTP) whose detail says what to send.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from contracts.errors import InvalidInput, TooLarge
from contracts.images.formats import ACCEPTED_MEDIA_TYPES
from serve.api.http_server import MAX_BODY_BYTES
from serve.core.digit_inputs import EncodedImage, RawImage, RequestLimits

JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"
OCTET_STREAM_TYPE = "application/octet-stream"
_BODY_KINDS = (
    f"an image file's bytes with its Content-Type ({', '.join(ACCEPTED_MEDIA_TYPES)} or application/octet-stream), "
    "multipart/form-data with file fields, or application/json with an `images` list"
)
_JSON_SHAPE = (
    '{"images": [{"encoded": "<base64 of an image file>"} or '
    '{"pixels": [0-255, ...], "height": H, "width": W, "already_mnist": false}], "model"?: "name", "top_k"?: 3, '
    '"min_confidence"?: 0.8}'
)
_READ_CHUNK_BYTES = 64 * 1024
# JSON bodies up to this size parse on the event loop: in less time than a hop to the decoding pool
# (about 5 us per KiB of base64, against 70 us or so for the hop, measured on a loaded 2-core machine).
PARSE_INLINE_BYTES = 16 * 1024
# How aiohttp's multipart reader signals a missing boundary, a broken part header or a truncated part.
_MALFORMED = (ValueError, AssertionError, HttpProcessingError)


@dataclass(frozen=True)
class DigitsBody:
    images: list[EncodedImage | RawImage]
    # Only a JSON body can name them; None: not given.
    model: str | None = None
    top_k: int | None = None
    model_version: str | None = None
    min_confidence: float | None = None


async def read_digits_body(request: web.Request, limits: RequestLimits,
                           run_in_pool: Callable[..., Awaitable]) -> DigitsBody:
    """The request's images; a large JSON body is parsed (and its base64 decoded) by run_in_pool."""
    content_type = request.content_type
    if content_type == JSON_TYPE or content_type.endswith("+json"):
        body = await request.read()
        if len(body) <= PARSE_INLINE_BYTES:
            return parse_json_body(body)
        return await run_in_pool(parse_json_body, body)
    if content_type == MULTIPART_TYPE:
        return DigitsBody(await read_multipart_images(request, limits))
    if content_type.startswith("image/") or content_type == OCTET_STREAM_TYPE:
        return DigitsBody([EncodedImage(await request.read())])
    hint = " (curl sends that for --data-binary without -H 'Content-Type: image/png')" if (
        content_type == "application/x-www-form-urlencoded") else ""
    raise web.HTTPUnsupportedMediaType(text=f"Content-Type {content_type!r} is not accepted here{hint}; send {_BODY_KINDS}")


async def read_multipart_images(request: web.Request, limits: RequestLimits) -> list[EncodedImage]:
    """The file fields of a form, in order, read with the body, image and count limits applied as they arrive."""
    max_body_bytes = request.app[MAX_BODY_BYTES]
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_body_bytes, actual_size=request.content_length)
    try:
        reader = await request.multipart()
    except _MALFORMED as exc:
        raise InvalidInput(f"malformed multipart/form-data body ({exc}); send a form with one file field per image") from exc
    images: list[EncodedImage] = []
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.filename:
                name = getattr(part, "name", None)
                raise InvalidInput(
                    f"the form field {name!r} is not a file; send each image as a file field "
                    "(curl -F 'image=@digit.png'), and the model and top_k in the URL"
                )
            if len(images) == limits.max_images_per_request:
                raise TooLarge(
                    f"the form carries more than {limits.max_images_per_request} images, the limit per request: "
                    "split it into several requests"
                )
            images.append(EncodedImage(await _read_part(part, request, len(images), limits, max_body_bytes)))
    except _MALFORMED as exc:
        raise InvalidInput(f"malformed multipart/form-data body ({exc}); send a form with one file field per image") from exc
    if not images:
        raise InvalidInput("the form carries no file; add a file field per image (curl -F 'image=@digit.png')")
    return images


async def _read_part(part: BodyPartReader, request: web.Request, index: int, limits: RequestLimits,
                     max_body_bytes: int) -> bytes:
    # Decoded bytes are bounded as well as received ones: a part may declare Content-Encoding: gzip.
    max_image_bytes = limits.image.max_image_bytes
    data = bytearray()
    while chunk := await part.read_chunk(_READ_CHUNK_BYTES):
        if request.content.total_bytes > max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_body_bytes, actual_size=request.content.total_bytes)
        async for decoded in part.decode_iter(chunk):
            data += decoded
            if len(data) > max_image_bytes:
                raise TooLarge(
                    f"image {index} ({part.filename!r}) is over {max_image_bytes} bytes, the limit per image; "
                    "downscale or compress it before sending"
                )
    return bytes(data)


def parse_json_body(body: bytes) -> DigitsBody:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInput(f"the body is not valid JSON ({exc}); send {_JSON_SHAPE}") from exc
    if not isinstance(document, dict):
        raise InvalidInput(f"the JSON body must be an object, got {type(document).__name__}; send {_JSON_SHAPE}")
    model = document.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput(f"`model` must be a string (a model's name), got {json.dumps(model)[:80]}")
    top_k = document.get("top_k")
    if top_k is not None:
        top_k = non_negative_int(top_k, "`top_k`")
    version = document.get("model_version")
    if version is not None and not isinstance(version, str):
        raise InvalidInput(f"`model_version` must be a string (a version number), got {json.dumps(version)[:80]}")
    min_confidence = document.get("min_confidence")
    if min_confidence is not None and (isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float))):
        raise InvalidInput(f"`min_confidence` must be a number between 0 and 1, got {json.dumps(min_confidence)[:80]}")
    images = document.get("images")
    if not isinstance(images, list):
        raise InvalidInput(f"the JSON body needs an `images` list; send {_JSON_SHAPE}")
    return DigitsBody([_json_image(image, index, len(images)) for index, image in enumerate(images)], model, top_k,
                      version or None, min_confidence)


def non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a whole number >= 0 (0: the default), got {json.dumps(value)[:80]}")
    return value


def _json_image(image: Any, index: int, count: int) -> EncodedImage | RawImage:
    where = f"image {index}: " if count > 1 else ""
    if not isinstance(image, dict) or ("encoded" in image) == ("pixels" in image):
        raise InvalidInput(f"{where}each image must be an object with either `encoded` or `pixels`; send {_JSON_SHAPE}")
    if "encoded" in image:
        return EncodedImage(_base64_bytes(image["encoded"], f"{where}`encoded`"))
    already_mnist = image.get("already_mnist", False)
    if not isinstance(already_mnist, bool):
        raise InvalidInput(f"{where}`already_mnist` must be true or false, got {json.dumps(already_mnist)[:80]}")
    pixels = image["pixels"]
    if isinstance(pixels, str):
        return RawImage(_base64_bytes(pixels, f"{where}`pixels`"), _dimension(image, "height", where),
                        _dimension(image, "width", where), already_mnist)
    rows = _pixel_array(pixels, where)
    if rows.ndim == 2:
        # Rows of pixels carry their own height and width; given ones must agree.
        height, width = rows.shape
        for name, size in (("height", height), ("width", width)):
            if name in image and _dimension(image, name, where) != size:
                raise InvalidInput(f"{where}`{name}` is {image[name]} but `pixels` has {size} {'rows' if name == 'height' else 'columns'}")
        return RawImage(rows.tobytes(), height, width, already_mnist)
    return RawImage(rows.tobytes(), _dimension(image, "height", where), _dimension(image, "width", where), already_mnist)


def _pixel_array(pixels: Any, where: str) -> np.ndarray:
    """A flat list of 0-255 integers, or a list of rows of them, as uint8."""
    refusal = (f"{where}`pixels` must be a list of integers 0-255 (row-major, or a list of rows), "
               "or the base64 of height * width bytes")
    if not isinstance(pixels, list):
        raise InvalidInput(refusal)
    try:
        values = np.asarray(pixels)
    except ValueError as exc:  # ragged rows
        raise InvalidInput(f"{refusal}; the rows differ in length") from exc
    if values.dtype.kind not in "iu" or values.ndim not in (1, 2) or values.size == 0:
        raise InvalidInput(refusal)
    if values.min() < 0 or values.max() > 255:
        raise InvalidInput(f"{refusal}; got values from {values.min()} to {values.max()}")
    return values.astype(np.uint8)


def _dimension(image: dict, name: str, where: str) -> int:
    value = image.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{where}raw `pixels` need `{name}`, a whole number >= 1, got {json.dumps(value)[:80]}")
    return value


def _base64_bytes(text: Any, what: str) -> bytes:
    """Standard base64, optionally as a data: URL (what a browser's canvas.toDataURL() gives)."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise InvalidInput(f"{what} is a data: URL without ';base64,'; send base64 data")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid base64 ({exc}); send the bytes base64-encoded (RFC 4648, with padding)") from exc
