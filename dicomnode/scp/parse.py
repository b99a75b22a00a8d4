"""What the SCP reads of a received data set: its header (everything before the pixel data), and proof that
the whole data set arrived.

pydicom reads truncated streams silently, and reading a whole data set to look at its header costs a copy of
its pixel data. For a spooled file the SCP therefore walks the top-level element headers (seeking over the
values, descending into undefined-length sequences and encapsulated pixel data) to see that every element
ends inside the file, then lets pydicom parse only what comes before the pixel data. Memory is the header's
size, whatever the data set's.
"""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicomnode.errors import ValidationError

REQUIRED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
FIRST_PIXEL_TAG = 0x7FE00008  # FloatPixelData; pydicom's stop_before_pixels stops at the first of the three
PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SEQUENCE_DELIMITER = {True: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", False: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_MAX_DEPTH = 32  # nested sequences deeper than this are not a real data set


class _Walker:
    """Seeks through a data set's element headers; raises ValidationError where one runs past the end."""

    def __init__(self, fp: BinaryIO, end: int, implicit: bool, little_endian: bool) -> None:
        self.fp = fp
        self.end = end
        self.implicit = implicit
        self.order = "<" if little_endian else ">"
        self._explicit_order = self.order

    def _read(self, count: int, what: str) -> bytes:
        data = self.fp.read(count)
        if len(data) < count:
            raise ValidationError(f"truncated: {what} ends past the end of the data set")
        return data

    def _skip(self, length: int, tag: int) -> None:
        position = self.fp.tell() + length
        if position > self.end:
            raise ValidationError(f"truncated: ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes")
        self.fp.seek(position)

    def _tag(self) -> int:
        group, element = struct.unpack(self.order + "HH", self._read(4, "an element tag"))
        return int(group << 16 | element)

    def elements(self, depth: int, until: int | None = None) -> int | None:
        """Walk elements until the end of the data set, or until the item delimiter when ``until`` is set.
        At depth 0, return the offset of the first pixel data element (None when there is none)."""
        if depth > _MAX_DEPTH:
            raise ValidationError("sequences nested too deeply")
        pixel_offset: int | None = None
        while self.fp.tell() < self.end:
            start = self.fp.tell()
            tag = self._tag()
            if tag == until:
                self._read(4, "an item delimiter")
                return None
            if tag >> 16 == 0xFFFE:
                raise ValidationError(f"misplaced delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            is_pixel_data = depth == 0 and tag >= FIRST_PIXEL_TAG and tag >> 16 == 0x7FE0
            if is_pixel_data and pixel_offset is None:
                pixel_offset = start
            vr = self._value_header(tag)
            if vr is not None:
                self._undefined_length_value(depth, tag, vr)
            if is_pixel_data and tag == PIXEL_DATA_TAG:
                # Bytes after the pixel data (padding, garbage some writers leave) are not read by anyone;
                # the pixel data itself is whole, which is what truncation would break.
                return pixel_offset
        if until is not None:
            raise ValidationError("truncated: an item of undefined length has no delimiter")
        return pixel_offset

    def _value_header(self, tag: int) -> bytes | None:
        """Read the VR and length; skip a defined-length value. For undefined length return the VR (b"SQ"
        in implicit VR), else None."""
        if self.implicit:
            (length,) = struct.unpack(self.order + "I", self._read(4, "an element length"))
            vr = b"SQ"
        else:
            vr = self._read(2, "a VR")
            if vr in _LONG_VRS:
                (length,) = struct.unpack(self.order + "2xI", self._read(6, "an element length"))
            else:
                (length,) = struct.unpack(self.order + "H", self._read(2, "an element length"))
        if length == _UNDEFINED_LENGTH:
            return vr
        self._skip(length, tag)
        return None

    def _undefined_length_value(self, depth: int, tag: int, vr: bytes) -> None:
        """Items up to the sequence delimiter: nested data sets (SQ; UN, whose content is implicit VR little
        endian, PS3.5 6.2.2) or fragments (encapsulated pixel data)."""
        nested = vr in (b"SQ", b"UN")
        while True:
            item = self._tag()
            (length,) = struct.unpack(self.order + "I", self._read(4, "an item length"))
            if item == _SEQUENCE_END:
                return
            if item != _ITEM:
                raise ValidationError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) holds a non-item element")
            if length != _UNDEFINED_LENGTH:
                self._skip(length, tag)
            elif not nested:
                raise ValidationError("a fragment of undefined length")
            elif vr == b"UN" and not self.implicit:
                self.implicit, self.order = True, "<"
                try:
                    self.elements(depth + 1, until=_ITEM_END)
                finally:
                    self.implicit, self.order = False, self._explicit_order
            else:
                self.elements(depth + 1, until=_ITEM_END)


def _check_required(header: Dataset) -> None:
    missing = [kw for kw in REQUIRED_UIDS if not str(header.get(kw, "") or "").strip()]
    if missing:
        raise ValidationError(f"missing {', '.join(missing)}")


def _data_set_start(fp: BinaryIO) -> int:
    """Where the data set begins in a file written by pynetdicom (preamble, DICM, group length first)."""
    prefix = fp.read(144)
    if len(prefix) < 144 or prefix[128:132] != b"DICM" or prefix[132:136] != b"\x02\x00\x00\x00":
        raise ValidationError("no file meta information")
    (group_length,) = struct.unpack("<I", prefix[140:144])
    return 144 + int(group_length)


def _looks_implicit(first_element: bytes) -> bool:
    """Some writers encode an "explicit VR" data set in implicit VR; pydicom reads them by looking at the first
    element's VR bytes, and so does the walk (two upper-case letters: explicit)."""
    vr = first_element[4:6]
    return len(vr) == 2 and not (vr.isalpha() and vr.isupper())


def scan_spooled(path: Path, transfer_syntax: UID) -> int:
    """Check that every element of a spooled file's data set is whole; return the bytes before its pixel
    data (what parsing the header will hold in memory). Raises ValidationError with the reason."""
    size = path.stat().st_size
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return size  # a deflated stream can only be checked by inflating it whole (read_spooled_header)
    with path.open("rb") as fp:
        start = _data_set_start(fp)
        if start >= size:
            raise ValidationError("the data set holds no elements")
        fp.seek(start)
        implicit = transfer_syntax.is_implicit_VR or _looks_implicit(fp.read(6))
        fp.seek(start)
        walker = _Walker(fp, size, implicit, transfer_syntax.is_little_endian)
        pixel_offset = walker.elements(0)
    return size if pixel_offset is None else pixel_offset


def read_spooled_header(path: Path, transfer_syntax: UID) -> Dataset:
    """The header (no pixel data) of a spooled file that :func:`scan_spooled` accepted."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return parse_header(path.read_bytes(), True, True)
    try:
        header = dcmread(path, force=True, stop_before_pixels=True)
        # the walk saw whole elements; pydicom may still read them otherwise (an unknown VR) and stop early
        _check_complete(header, None, transfer_syntax.is_little_endian, False)
        _check_required(header)
    except ValidationError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed bytes; all mean "cannot understand"
        raise ValidationError(f"cannot parse the data set: {type(exc).__name__}: {exc}") from exc
    return header


def _check_complete(ds: Dataset, file_bytes: bytes | None, little_endian: bool, deflated: bool) -> None:
    """pydicom reads truncated streams silently; a last element shorter than its declared length betrays them.
    (Without ``file_bytes``, as for a spooled file the walk already checked, undefined lengths are not.)"""
    tags = list(ds.keys())
    if not tags:
        raise ValidationError("the data set holds no elements")
    last = ds.get_item(tags[-1])
    if not isinstance(last, RawDataElement):
        return
    if last.length == _UNDEFINED_LENGTH:
        if file_bytes is not None and not deflated and not file_bytes.endswith(_SEQUENCE_DELIMITER[little_endian]):
            raise ValidationError(f"truncated: {last.tag} of undefined length has no sequence delimiter")
    elif last.value is not None and len(last.value) < last.length:
        raise ValidationError(f"truncated: {last.tag} declares {last.length} bytes, {len(last.value)} received")


def parse_header(file_bytes: bytes, little_endian: bool, deflated: bool) -> Dataset:
    """Parse a data set held in memory; return it without pixel data. Raises ValidationError with the reason."""
    try:
        ds = dcmread(BytesIO(file_bytes), force=True)
        _check_complete(ds, file_bytes, little_endian, deflated)
        header = ds[:FIRST_PIXEL_TAG]
        header.file_meta = ds.file_meta
        _check_required(header)
    except ValidationError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed bytes; all mean "cannot understand"
        raise ValidationError(f"cannot parse the data set: {type(exc).__name__}: {exc}") from exc
    return header
