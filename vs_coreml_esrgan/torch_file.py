"""What a ``torch.save`` file declares, read without loading it: the bytes its tensors'
storages claim, checked against the file's own size before torch allocates them.

torch.save writes every storage uncompressed (zip entries stored, or raw bytes after the
pickles in the legacy format), so a genuine file is at least as large as the storages it
declares. A file declaring more is compressed or forged: loading it would allocate what it
claims (a 1 MB file declaring a 1 GiB storage took 2 GB and up to 40 s before failing).
Needs no deep-learning framework: the pickles are read with :mod:`pickletools`, never
unpickled.
"""

from __future__ import annotations

import os
import pickletools
import zipfile
from pathlib import Path
from typing import IO

from .network_spec import ModelError

# Bytes per element of the storage classes torch.save names ('torch FloatStorage', ...);
# an unknown class counts as 8, the widest of the real ones.
_ELEMENT_BYTES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexDouble": 16, "ComplexFloat": 8,
    "Untyped": 1, "QUInt8": 1, "QInt8": 1, "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1,
}
_LEGACY_PICKLES = 4  # magic number, protocol version, system info, then the tensors


def check_declared_sizes(path: Path) -> None:
    """ModelError naming the file when its storages (or, for a zip archive, its entries)
    declare more bytes than the file holds. Files this cannot read are left to torch."""
    size = os.path.getsize(path)
    if zipfile.is_zipfile(path):
        declared, what = _zip_declared(path)
    else:
        with open(path, "rb") as stream:
            declared, what = _storage_bytes(_legacy_pickles(stream)), "tensor storages"
    if declared > size:
        raise ModelError(
            f"{path}: its {what} declare {_megabytes(declared)} in a {_megabytes(size)} "
            "file; torch.save writes them uncompressed, so the file is compressed, damaged "
            "or forged (loading it would allocate what it declares): refused before "
            "loading; re-save the checkpoint with torch.save")


def _zip_declared(path: Path) -> tuple[int, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            unpacked = sum(entry.file_size for entry in entries)
            if unpacked > os.path.getsize(path):
                return unpacked, "zip entries"
            pickles = [e for e in entries if e.filename.endswith("data.pkl")]
            if not pickles:
                return 0, "tensor storages"
            data = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
        return 0, "tensor storages"  # torch names what is wrong with it
    import io

    return _storage_bytes([io.BytesIO(data)]), "tensor storages"


def _legacy_pickles(stream: IO[bytes]) -> list[IO[bytes]]:
    """The legacy format's pickles follow each other; each read leaves the stream after
    its STOP, so the same stream is handed on for each."""
    return [stream] * _LEGACY_PICKLES


def pickle_globals(path: Path) -> list[str]:
    """The classes and functions ('module name') a torch.save file's pickles name, in
    order of first appearance; [] where they cannot be read."""
    if zipfile.is_zipfile(path):
        import io

        try:
            with zipfile.ZipFile(path) as archive:
                names = [e for e in archive.infolist() if e.filename.endswith("data.pkl")]
                streams = [io.BytesIO(archive.read(names[0]))] if names else []
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
            return []
        return _globals(streams)
    with open(path, "rb") as stream:
        return _globals(_legacy_pickles(stream))


def _globals(streams: list[IO[bytes]]) -> list[str]:
    found = dict.fromkeys(event[1] for event in _events(streams) if event[0] == "global")
    return list(found)


def _storage_bytes(streams: list[IO[bytes]]) -> int:
    """Total bytes of the distinct storages the pickles' persistent ids declare."""
    storages: dict[object, int] = {}
    for event in _events(streams):
        if event[0] == "storage":
            _, key, nbytes = event
            storages[key] = max(nbytes, storages.get(key, 0))
    return sum(storages.values())


def _events(streams: list[IO[bytes]]) -> list[tuple]:
    """The events of each pickle in turn, up to the first that cannot be read (not a
    pickle, or a damaged one: torch says what is wrong with it)."""
    events: list[tuple] = []
    for stream in streams:
        try:
            events.extend(_pickle_events(stream))
        except Exception:
            break
    return events


def _pickle_events(stream: IO[bytes]):
    """('storage', key, bytes) for each ('storage', class, key, location, numel, ...)
    persistent id and ('global', 'module name') for each class or function one pickle
    names, found by following its stack as pickletools describes each opcode."""
    stack: list[object] = []
    marks: list[int] = []
    memo: dict[object, object] = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name == "STOP":
            return
        if name == "MARK":
            marks.append(len(stack))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg))
        elif name == "GLOBAL":
            stack.append(("global", arg))
            yield "global", arg
        elif name == "STACK_GLOBAL":
            module, qualname = stack.pop(-2), stack.pop()
            stack.append(("global", f"{module} {qualname}"))
            yield "global", f"{module} {qualname}"
        elif name == "TUPLE":
            start = marks.pop()
            items = tuple(stack[start:])
            del stack[start:]
            stack.append(items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = tuple(stack[-count:])
            del stack[-count:]
            stack.append(items)
        elif name in ("BINPERSID", "PERSID"):
            pid = stack.pop() if name == "BINPERSID" else arg
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                yield "storage", *_storage_entry(pid)
            stack.append(None)
        elif opcode.arg is not None and not opcode.stack_before and \
                len(opcode.stack_after) == 1:
            stack.append(arg)  # a literal: text, number, bytes
        else:
            _generic(opcode, stack, marks)


def _storage_entry(pid: tuple) -> tuple[object, int]:
    kind, key, numel = pid[1], pid[2], pid[4]
    cls = kind[1].rsplit(" ", 1)[-1] if isinstance(kind, tuple) else ""
    element = _ELEMENT_BYTES.get(cls.removesuffix("Storage"), 8)
    return key, (numel if isinstance(numel, int) else 0) * element


def _generic(opcode: pickletools.OpcodeInfo, stack: list[object], marks: list[int]) -> None:
    """Any other opcode: pop what it consumes (to its mark where it takes one), push one
    placeholder per result."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        del stack[marks.pop():]
        before = before[:before.index(pickletools.markobject)]
    if before:
        del stack[-len(before):]
    stack.extend([None] * len(opcode.stack_after))


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count} bytes"
