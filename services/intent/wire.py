"""Naming the field behind a request the protobuf runtime refuses to parse.

protobuf rejects a string field holding invalid UTF-8 while deserialising, before any servicer
code runs, and grpc then answers UNKNOWN without saying which field. The intent service parses
requests itself: on failure it walks the wire format to find the offending field and answers
INVALID_ARGUMENT naming it (``requests[3].language: invalid UTF-8``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request that did not parse; the servicer turns it into an error."""

    field: str
    problem: str


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def find_bad_utf8(data: bytes, descriptor: Any, prefix: str = "") -> str | None:
    """The path (``requests[2].text``) of the first string field that is not UTF-8, or None."""
    counts: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
                continue
            if wire_type == 1:
                pos += 8
                continue
            if wire_type == 5:
                pos += 4
                continue
            if wire_type != 2:
                return None
            length, pos = _varint(data, pos)
            chunk = data[pos : pos + length]
            pos += length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            index = counts.get(number, 0)
            counts[number] = index + 1
            repeated = bool(field.is_repeated)
            path = f"{prefix}{field.name}" + (f"[{index}]" if repeated else "")
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return path
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                found = find_bad_utf8(chunk, field.message_type, path + ".")
                if found:
                    return found
    except ValueError:
        return None
    return None


def tolerant_parser(message_type: type[M]) -> Callable[[bytes], M | UndecodableRequest]:
    """A request deserializer that returns :class:`UndecodableRequest` instead of raising."""

    def parse(data: bytes) -> M | UndecodableRequest:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            field = find_bad_utf8(data, message_type.DESCRIPTOR)
            if field is not None:
                return UndecodableRequest(field, "invalid UTF-8")
            return UndecodableRequest("request", f"cannot be parsed: {exc}")

    return parse


def parse_with(message_type: type[M]) -> Any:
    """``tolerant_parser`` typed loosely for grpc's handler factories."""
    return tolerant_parser(message_type)
