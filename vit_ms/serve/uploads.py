"""Reading the images of a POST /v1/predict request into memory, within the server's limits (never onto disk).

    images = await read_images(request, Limits(max_body_bytes=20 << 20, max_images=16))   # [(name, bytes)]

Two ways to send images: the raw bytes of one image as the body (any image/* type or
application/octet-stream), or multipart/form-data with one part per image (the page sends this; curl -F).
Anything else, and every limit crossed, raises RequestError with the HTTP status and a message for the client:
415 unsupported content type, 413 body over `max_body_bytes` or more than `max_images` images, 400 no image or a
malformed multipart body or body encoding, 408 a body not complete within `body_timeout_s` (its connection is
closed: a stalled upload holds nothing for longer). The body is counted while it streams in, so an oversized upload
is refused before it is held whole. A client that closes its connection mid-body raises ClientGone: nobody is left
to answer, and the server logs one INFO line.
"""
import asyncio
from dataclasses import dataclass
from typing import List, Optional, Tuple

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

CHUNK = 64 * 1024


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP status (4xx), the message goes to the client."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.close = close  # close the connection after answering (the rest of the body is not worth reading)


class ClientGone(RequestError):
    """The client closed its connection before its request body was complete."""

    def __init__(self):
        super().__init__(400, "the connection closed before the request body was complete", close=True)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 1024 * 1024
    max_images: int = 16
    body_timeout_s: float = 30.0  # the whole body (every part) must arrive within this many seconds
    bodies_in_flight: int = 4  # request bodies held at once, in units of max_body_bytes (see body_reservation)

    def body_reservation(self, content_length: Optional[int]) -> int:
        """The bytes a request holds of the bodies' budget while it is read and answered: its Content-Length, or
        `max_body_bytes` when it does not say (chunked)."""
        return min(content_length if content_length is not None else self.max_body_bytes, self.max_body_bytes)


def _too_large(limits: Limits) -> RequestError:
    return RequestError(413, f"the request body is over the server's limit of {limits.max_body_bytes} bytes; "
                             f"send fewer or smaller images (the server was started with --max-body-mb)", close=True)


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
    kind = request.content_type
    if not (kind.startswith("image/") or kind in ("application/octet-stream", "multipart/form-data")):
        raise RequestError(415, f"content type '{kind}' is not accepted: send one image as the body (Content-Type "
                                f"image/jpeg, image/png, ... or application/octet-stream) or several as "
                                f"multipart/form-data (curl -F image=@photo.jpg)")
    budget = _Budget(limits)
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            if kind == "multipart/form-data":
                images = await _read_multipart(request, budget)
            else:
                data = await _read_stream(request.content.read, budget)
                images = [("body", data)] if data else []
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s (the server's "
                                f"--body-timeout-s); send it at once, or in smaller requests on a slow link",
                           close=True) from None
    except ConnectionResetError:  # aiohttp: "Connection lost" while the body streams in
        raise ClientGone() from None
    except HttpProcessingError as err:  # a broken chunked encoding, a garbage multipart part header, ...
        raise RequestError(400, f"malformed request body ({_reason(err)}); send the image bytes as the body, "
                                f"or multipart/form-data parts (curl -F image=@photo.jpg)", close=True) from None
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
    except (ValueError, AssertionError, HttpProcessingError) as err:  # aiohttp's multipart reader: a malformed
        # boundary (ValueError, AssertionError) or part header (InvalidHeader)
        raise RequestError(400, f"malformed multipart/form-data body ({_reason(err)}); send the images as form "
                                f"parts (curl -F image=@photo.jpg)", close=True) from None
    return images


def _reason(err: Exception) -> str:
    """aiohttp's HTTP errors print as '400, message: ...'; the message alone."""
    return err.message.strip() if isinstance(err, HttpProcessingError) else str(err)
