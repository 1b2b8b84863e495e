"""Large sequences encoded here, as the bytes pydicom would write, and handed to it as one raw element.

pydicom writes a dataset element by element, with per-element checks, conversions and buffer
copies; for the thousands of small items of an RT Structure Set's contours or a SEG's per-frame
functional groups that machinery is most of the writing time (issue 11). Those items hold only
a few simple VRs, encoded here explicit VR little endian with defined lengths, exactly as
pydicom does (PS3.5 7.1.2, 7.5.1; tests/unit/test_output_bytes_stable.py pins the result). A
sequence with anything else is left to pydicom.

A dataset holding such a raw element must say that it is already in the file's encoding
(`mark_encoded`): pydicom otherwise parses raw elements back into datasets before writing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom import Dataset
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

# Dates and times are left out: pydicom formats their objects its own way.
_STRINGS = {"CS", "DS", "IS", "LO", "SH", "UI"}
_NUMBERS = {"US": "H", "UL": "I", "SS": "h", "SL": "i", "FL": "f", "FD": "d"}


class _NotSimple(ValueError):
    """The sequence holds something this module does not encode; pydicom writes it."""


def encoded_element(tag: BaseTag, vr: str, value: bytes) -> bytes:
    """PS3.5 7.1.2: SQ has a reserved field and a 32-bit length, the other VRs here a 16-bit one.

    A value too long for 16 bits goes out as UN with a 32-bit length, as pydicom writes it
    (PS3.5 6.2.2): a contour of thousands of points can be that long.
    """
    if len(value) > 0xFFFF and vr != "SQ":
        vr = "UN"
    if vr in ("SQ", "UN"):
        return struct.pack("<HH2sHI", tag.group, tag.element, vr.encode("ascii"), 0, len(value)) + value
    return struct.pack("<HH2sH", tag.group, tag.element, vr.encode("ascii"), len(value)) + value


def encoded_item(body: bytes) -> bytes:
    """PS3.5 7.5.1: an item of defined length."""
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def padded(value: bytes, pad: bytes = b" ") -> bytes:
    """Values have even length (PS3.5 7.1.1): UIs pad with NUL, text VRs with a space."""
    return value + pad if len(value) % 2 else value


def _values(value: object) -> list[object]:
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _string(element: DataElement) -> bytes:
    values = _values(element.value)
    # Numbers as strings keep the text they were made from, as pydicom writes them.
    text = "\\".join(getattr(v, "original_string", None) or str(v) for v in values)
    if not text.isascii():
        raise _NotSimple(f"{element.tag} holds non-ASCII text; pydicom applies the character set")
    return padded(text.encode("ascii"), b"\x00" if element.VR == "UI" else b" ")


def _value(element: DataElement) -> bytes:
    if element.is_empty:
        return b""
    if element.VR in _STRINGS:
        return _string(element)
    if element.VR in _NUMBERS:
        values = _values(element.value)
        return struct.pack(f"<{len(values)}{_NUMBERS[element.VR]}", *values)
    raise _NotSimple(f"{element.tag} has VR {element.VR}")


def _dataset(ds: Dataset) -> bytes:
    parts = []
    for element in ds:  # in tag order, as written
        if element.is_raw or element.tag.element == 0:
            raise _NotSimple(f"{element.tag} is raw or a group length")
        if element.VR == "SQ":
            parts.append(encoded_element(element.tag, "SQ", _items(element.value)))
        else:
            parts.append(encoded_element(element.tag, element.VR, _value(element)))
    return b"".join(parts)


def _items(items: Iterable[Dataset]) -> bytes:
    return b"".join(encoded_item(_dataset(item)) for item in items)


def freeze_sequence(ds: Dataset, keyword: str) -> bool:
    """Replace the sequence `keyword` of `ds` by the same bytes as one raw element; False if left as it was.

    `ds` must then be marked with `mark_encoded` before it is written.
    """
    element = ds.data_element(keyword)
    if element is None or element.VR != "SQ":
        return False
    try:
        value = _items(element.value)
    except _NotSimple:
        return False
    ds[element.tag] = RawDataElement(element.tag, "SQ", len(value), value, 0, False, True)
    return True


def mark_encoded(ds: Dataset) -> None:
    """Say that `ds`'s own elements are already as they will be written (explicit VR little endian).

    pydicom then writes raw elements as they are. It also skips its ambiguous-VR correction of
    this level, so that is done here, as pydicom would have done it.
    """
    for element in list(ds):
        if " or " in element.VR:
            correct_ambiguous_vr_element(element, ds, True)
    ds.set_original_encoding(False, True, convert_encodings(ds.get("SpecificCharacterSet", default_encoding)))
