"""Open log files (plain, gzip, bzip2, xz, zstd by magic bytes) and yield complete lines with offsets."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LogParseError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
BLOCK = 4 << 20  # bytes per block handed to the parser (a few tens of thousands of lines)


def first_line_fingerprint(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()[:32]


EMPTY_FINGERPRINT = first_line_fingerprint(b"")


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int
    size: int
    mtime: float
    fingerprint: str  # sha256 of the first line (of the decompressed text)
    compressed: bool


class ZstdReader(io.RawIOBase):
    """A zstd file's text, every frame of it. Data that ends inside a frame, or is corrupt,
    raises EOFError as gzip, bz2 and lzma do (``zstandard``'s own reader just stops there)."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        import zstandard  # only for .zst files

        self._raw = raw
        self._error = zstandard.ZstdError
        self._context = zstandard.ZstdDecompressor()
        self._frame = self._context.decompressobj()
        self._in_frame = False
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            rest = b""
            if self._frame.eof:  # a file may hold several frames (zstd run again, files concatenated)
                rest = self._frame.unused_data
                self._frame = self._context.decompressobj()
                self._in_frame = False
            data = rest or self._raw.read(CHUNK)
            if not data:
                if self._in_frame:
                    raise EOFError("zstd data ends inside a frame")
                return 0
            self._in_frame = True
            try:
                self._pending = self._frame.decompress(data)
            except self._error as exc:
                raise EOFError(f"zstd data is corrupt: {exc}") from None
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_zstd(path: Path) -> io.BufferedReader:
    return io.BufferedReader(ZstdReader(open(path, "rb")), CHUNK)


# every opener gives a buffered binary stream (read1: a truncated stream still gives what came before)
MAGIC: dict[bytes, Callable[[Path], io.BufferedIOBase]] = {
    b"\x1f\x8b": gzip.open,
    b"BZh": bz2.open,
    b"\xfd7zXZ\x00": lzma.open,
    b"\x28\xb5\x2f\xfd": open_zstd,
}


def open_log(path: Path) -> tuple[io.BufferedIOBase, bool]:
    """The file as a binary stream of its text, and whether it was compressed."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise LogParseError(f"cannot read log file {path}: {exc.strerror}") from None
    head = raw.read(6)
    raw.seek(0)
    for magic, opener in MAGIC.items():
        if head.startswith(magic):
            raw.close()
            return opener(path), True
    return raw, False


def identify_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    return any(head.startswith(magic) for magic in MAGIC)


def identify(path: Path) -> FileIdentity:
    st = os.stat(path)
    stream, compressed = open_log(path)
    with stream:
        try:
            first = stream.readline(4096)
        except (EOFError, OSError, lzma.LZMAError):
            first = b""
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime, first_line_fingerprint(first), compressed)


class LineSource:
    """Complete lines of one file from ``offset`` on; ``offset`` advances past each line consumed."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.warning: str | None = None

    def lines(self) -> Iterator[tuple[int, str]]:
        for base, block in self.blocks():
            offset = base
            for raw in io.BytesIO(block):
                yield offset, raw[:-1].decode("utf-8", "replace")
                offset += len(raw)

    def blocks(self, size: int = BLOCK) -> Iterator[tuple[int, bytes]]:
        """``(offset, bytes)`` of about ``size`` bytes of complete lines each; ``offset`` advances past each."""
        stream, compressed = open_log(self.path)
        with stream:
            if self.offset:
                self._skip(stream, compressed)
            yield from self._read(stream, size)

    def plain(self) -> bool:
        """Whether the file can be read at any offset (not compressed), so workers can read it in pieces."""
        return not identify_compressed(self.path)

    def _skip(self, stream: io.BufferedIOBase, compressed: bool) -> None:
        if not compressed:
            stream.seek(self.offset)
            return
        left = self.offset
        while left > 0:
            chunk = stream.read(min(left, CHUNK))
            if not chunk:
                break
            left -= len(chunk)

    def _read(self, stream: io.BufferedIOBase, size: int) -> Iterator[tuple[int, bytes]]:
        pending = b""
        done = False
        while not done:
            pieces = [pending]
            have = len(pending)
            newline = False  # a line longer than ``size`` still ends a block
            while have < size or not newline:
                try:  # read1: a truncated stream still gives what came before
                    chunk = stream.read1(max(size - have, CHUNK))
                except (EOFError, OSError, lzma.LZMAError, zlib_error()) as exc:
                    self.warning = f"{self.path}: compressed data ends early ({exc}); kept what was readable"
                    log.warning(self.warning)
                    chunk = b""
                if not chunk:
                    done = True
                    break
                pieces.append(chunk)
                have += len(chunk)
                newline = newline or b"\n" in chunk
            data = b"".join(pieces)
            end = data.rfind(b"\n")
            pending = data[end + 1 :]
            if end < 0:
                continue
            block = data[: end + 1]
            base = self.offset
            self.offset = base + len(block)
            yield base, block
        # a last line without "\n" is still being written: leave it for the next scan (P9)


@dataclass(frozen=True, slots=True)
class Piece:
    """A stretch of a plain file read at a fixed offset, cut into what lies on either side of its lines.

    ``head`` ends the line the previous piece began (b"" when ``start`` begins a line);
    ``body`` holds whole lines from ``body_start`` on; ``tail`` begins a line a later piece
    ends. A piece without any "\n" is all ``tail``, and ``head`` is None.
    """

    start: int
    head: bytes | None
    body: memoryview
    body_start: int
    tail: bytes


def read_piece(fd: int, start: int, length: int, at_line_start: bool) -> Piece:
    """``length`` bytes of ``fd`` from ``start`` (fewer when the file was cut short meanwhile)."""
    data = os.pread(fd, length, start)
    last = data.rfind(b"\n") + 1
    if last == 0:
        return Piece(start, None, memoryview(b""), start, data)
    first = 0 if at_line_start else data.find(b"\n") + 1
    return Piece(start, data[:first], memoryview(data)[first:last], start + first, data[last:])


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error
