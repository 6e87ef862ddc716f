"""The artifact store: trained weights and confusion matrices, in a directory (default) or
under any URI ``pyarrow.fs`` opens (``s3://bucket/prefix``, ``gs://...``, a mounted NFS path).

>>> import tempfile
>>> base = tempfile.mkdtemp()
>>> uri = put(base, "results/1/weights.bin", b"abc")
>>> get(uri)
b'abc'
"""

from __future__ import annotations

import posixpath

__all__ = ["put", "replace", "get", "delete", "delete_tree", "join"]


def _fs(uri: str):
    from pyarrow import fs

    if "://" not in uri:
        return fs.LocalFileSystem(), uri
    return fs.FileSystem.from_uri(uri)


def join(base: str, relpath: str) -> str:
    return posixpath.join(base.rstrip("/"), relpath)


def put(base: str, relpath: str, data: bytes) -> str:
    """Write ``data`` at ``base/relpath``; return its URI."""
    uri = join(base, relpath)
    filesystem, path = _fs(uri)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as f:
        f.write(data)
    return uri


def replace(base: str, relpath: str, data: bytes) -> str:
    """`put`, but a reader sees the old content or the new, never part of it, also after
    a crash of the machine: written aside, flushed to the disk, then moved over (a rename
    on a file system; an object store's writes are whole already). Return its URI."""
    uri = join(base, relpath)
    if "://" not in uri or uri.startswith("file://"):
        import os
        from pathlib import Path

        path = Path(uri.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(path.name + ".partial")
        with open(aside, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(aside, path)
        fd = os.open(path.parent, os.O_RDONLY)  # (the rename itself, on the disk too)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return uri
    aside = put(base, f"{relpath}.partial", data)
    filesystem, path = _fs(aside)
    uri = join(base, relpath)
    filesystem.move(path, _fs(uri)[1])
    return uri


def get(uri: str) -> bytes:
    filesystem, path = _fs(uri)
    with filesystem.open_input_stream(path) as f:
        return f.read()


def delete(uri: str) -> None:
    """Delete one artifact; nothing happens if it does not exist."""
    from pyarrow import fs

    filesystem, path = _fs(uri)
    if filesystem.get_file_info(path).type == fs.FileType.File:
        filesystem.delete_file(path)


def delete_tree(uri: str) -> None:
    """Delete a directory of artifacts; nothing happens if it does not exist."""
    from pyarrow import fs

    filesystem, path = _fs(uri)
    if filesystem.get_file_info(path).type != fs.FileType.NotFound:
        filesystem.delete_dir(path)
