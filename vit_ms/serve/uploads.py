"""Reading the images of a POST /v1/predict request into memory, within the server's limits (never onto disk).

    images = await read_images(request, Limits(max_body_bytes=20 << 20, max_images=16))   # [(name, bytes)]

Two ways to send images: the raw bytes of one image as the body (any image/* type or
application/octet-stream), or multipart/form-data with one part per image (the page sends this; curl -F).
Anything else, and every limit crossed, raises RequestError with the HTTP status and a message for the client:
415 unsupported content type, 413 body over `max_body_bytes` or more than `max_images` images, 400 no image or a
malformed multipart body. The body is counted while it streams in, so an oversized upload is refused before it is
held whole.
"""
from dataclasses import dataclass
from typing import List, Tuple

from aiohttp import BodyPartReader, web

CHUNK = 64 * 1024


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP status (4xx), the message goes to the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 1024 * 1024
    max_images: int = 16


def _too_large(limits: Limits) -> RequestError:
    return RequestError(413, f"the request body is over the server's limit of {limits.max_body_bytes} bytes; "
                             f"send fewer or smaller images (the server was started with --max-body-mb)")


class _Budget:
    """Bytes left to read of the whole body."""

    def __init__(self, limits: Limits):
        self.limits, self.left = limits, limits.max_body_bytes

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _too_large(self.limits)


async def _read_stream(read_chunk, budget: _Budget) -> bytes:
    chunks = []
    while True:
        chunk = await read_chunk(CHUNK)
        if not chunk:
            return b"".join(chunks)
        budget.take(len(chunk))
        chunks.append(chunk)


async def read_images(request: web.Request, limits: Limits) -> List[Tuple[str, bytes]]:
    """The request's images as (name, bytes): the part's file name (or field name), or "body" for a raw body."""
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise _too_large(limits)
    budget = _Budget(limits)
    kind = request.content_type
    if kind.startswith("image/") or kind == "application/octet-stream":
        data = await _read_stream(request.content.read, budget)
        images = [("body", data)] if data else []
    elif kind == "multipart/form-data":
        images = await _read_multipart(request, budget)
    else:
        raise RequestError(415, f"content type '{kind}' is not accepted: send one image as the body (Content-Type "
                                f"image/jpeg, image/png, ... or application/octet-stream) or several as "
                                f"multipart/form-data (curl -F image=@photo.jpg)")
    if not images:
        raise RequestError(400, "the request holds no image: send the image bytes as the body, or multipart "
                                "parts with the images")
    return images


async def _read_multipart(request: web.Request, budget: _Budget) -> List[Tuple[str, bytes]]:
    images: List[Tuple[str, bytes]] = []
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if len(images) == budget.limits.max_images:
                raise RequestError(413, f"more than {budget.limits.max_images} images in one request; send at "
                                        f"most {budget.limits.max_images} per request (the server's "
                                        f"--max-images)")
            if not isinstance(part, BodyPartReader):
                raise RequestError(400, "nested multipart bodies are not accepted; send each image as its own "
                                        "form part")
            data = await _read_stream(part.read_chunk, budget)
            if data:
                images.append((part.filename or part.name or f"part {len(images) + 1}", data))
    except (ValueError, AssertionError) as err:  # aiohttp's multipart reader: a malformed boundary or part header
        raise RequestError(400, f"malformed multipart/form-data body ({err}); send the images as form parts "
                                f"(curl -F image=@photo.jpg)") from err
    return images
