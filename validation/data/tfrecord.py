"""TFRecord files without TensorFlow: framing (length + masked CRC32C), GZIP, and the
tf.train.Example protobuf subset CosmoFlow uses (bytes, float and int64 lists)."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

Feature = bytes | list[float] | list[int]


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC of `data`."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _open(path: Path, mode: str) -> object:
    return gzip.open(path, mode) if path.name.endswith(".gz") else open(path, mode)


def read_records(path: Path, verify_data: bool = False) -> Iterator[bytes]:
    """Yield the raw records of a (optionally .gz) TFRecord file; checks the length CRC
    always and the data CRC if asked (it is slow in pure Python for 16 MB samples)."""
    with _open(path, "rb") as f:  # type: ignore[attr-defined]
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                raise ValueError(f"{path}: corrupt record length (CRC mismatch)")
            data = f.read(length)
            (crc,) = struct.unpack("<I", f.read(4))
            if len(data) < length or (verify_data and crc != masked_crc(data)):
                raise ValueError(f"{path}: corrupt or truncated record")
            yield data


def write_records(path: Path, records: list[bytes]) -> None:
    """Write records as a TFRecord file (GZIP if the name ends in .gz)."""
    with _open(path, "wb") as f:  # type: ignore[attr-defined]
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", masked_crc(length)))
            f.write(data + struct.pack("<I", masked_crc(data)))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = _varint(buf, pos)
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 5:
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        elif wire == 1:
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _feature(buf: bytes) -> Feature:
    for number, _, payload in _fields(buf):
        assert isinstance(payload, bytes)
        if number == 1:  # BytesList
            return b"".join(v for _, _, v in _fields(payload) if isinstance(v, bytes))
        if number == 2:  # FloatList: packed or not
            out: list[float] = []
            for _, wire, v in _fields(payload):
                assert isinstance(v, bytes)
                out += list(np.frombuffer(v, "<f4")) if wire == 2 else [struct.unpack("<f", v)[0]]
            return [float(x) for x in out]
        if number == 3:  # Int64List
            ints: list[int] = []
            for _, wire, v in _fields(payload):
                if wire == 2 and isinstance(v, bytes):
                    p = 0
                    while p < len(v):
                        x, p = _varint(v, p)
                        ints.append(x)
                elif isinstance(v, int):
                    ints.append(v)
            return ints
    return b""


def parse_example(buf: bytes) -> dict[str, Feature]:
    """Decode a tf.train.Example into {name: bytes | floats | ints}."""
    out: dict[str, Feature] = {}
    for number, _, features in _fields(buf):
        if number != 1 or not isinstance(features, bytes):
            continue
        for _, _, entry in _fields(features):  # map<string, Feature> entries
            assert isinstance(entry, bytes)
            name, value = "", b""
            for n, _, v in _fields(entry):
                if n == 1 and isinstance(v, bytes):
                    name = v.decode()
                elif n == 2 and isinstance(v, bytes):
                    value = v
            out[name] = _feature(value)
    return out


def _ld(number: int, payload: bytes) -> bytes:
    return _enc_varint(number << 3 | 2) + _enc_varint(len(payload)) + payload


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_example(features: dict[str, bytes | list[float]]) -> bytes:
    """Encode bytes and float features as a tf.train.Example (for tests and tools)."""
    entries = b""
    for name, value in features.items():
        if isinstance(value, bytes):
            feature = _ld(1, _ld(1, value))
        else:
            feature = _ld(2, _ld(1, np.asarray(value, "<f4").tobytes()))
        entries += _ld(1, _ld(1, name.encode()) + _ld(2, feature))
    return _ld(1, entries)
