"""Fetch a published archive and unpack it safely: the data sets the paper mode needs (CIFAR-10/100,
:func:`sam_tutorial.engine.cifar.download_cifar`) come as tarballs with a published MD5 checksum.

* :func:`fetch` downloads into ``<file>.part``, resumes an interrupted download with an HTTP ``Range``
  request, checks the published checksum and only then renames the file into place (a file that does not
  match is deleted and never used);
* :func:`extract_tar` refuses an archive any of whose members would leave the target folder (an absolute
  path, ``..``, a symbolic or hard link, a device) before writing anything, unpacks into a hidden folder
  beside the target and moves the result into place with one rename per top-level entry.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

__all__ = ["DownloadError", "extract_tar", "fetch", "md5sum"]

CHUNK = 1 << 20


class DownloadError(OSError):
    """A download that failed, was interrupted, or whose checksum does not match the published one; the
    message says what was kept (a partial file to resume) and what to do."""


def md5sum(path: str | os.PathLike[str]) -> str:
    """The hexadecimal MD5 digest of a file (the checksum CIFAR's authors publish)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, offset: int, timeout: float) -> tuple[http.client.HTTPResponse | None, int]:
    """The response for ``url`` from byte ``offset`` and the offset it really starts at (0 when the server
    ignores the range); ``(None, offset)`` when the partial file is already complete (HTTP 416)."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return None, offset
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; check the address or try again") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: cannot connect ({err}); check the network and run again") from err
    start = 0
    if offset and resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        start = int(content_range.split()[1].split("-")[0]) if content_range.startswith("bytes ") else 0
        if start != offset:
            resp.close()
            raise DownloadError(f"{url}: the server resumed at byte {start}, not {offset}; delete the .part "
                                "file and run again")
    return resp, start


def fetch(url: str, dest: str | os.PathLike[str], *, md5: str, timeout: float = 60.0,
          progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already has checksum ``md5``; resume ``dest.part``.

    Args:
        url: the archive's address (``http``, ``https`` or ``file``).
        dest: where the verified file goes.
        md5: the published MD5 checksum of the file.
        timeout: seconds to wait for the server on each read.
        progress: show a progress bar (tqdm).

    Returns:
        ``dest``, whose MD5 equals ``md5``.

    Raises:
        DownloadError: when the server cannot be reached, the download is interrupted (the partial file is
            kept; running again resumes it) or the checksum of the complete file differs (the file is
            deleted).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    resp, start = _open(url, offset, timeout)
    if resp is not None:
        total = resp.headers.get("Content-Length")
        with resp, open(part, "r+b" if start else "wb") as f, tqdm(
            total=start + int(total) if total else None, initial=start, unit="B", unit_scale=True,
            desc=dest.name, disable=not progress,
        ) as bar:
            f.seek(start)
            f.truncate()
            try:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, OSError) as err:
                raise DownloadError(f"{url}: interrupted after {f.tell():,} bytes ({err}); {part} is kept, "
                                    "run again to resume") from err
        if total is not None and part.stat().st_size != start + int(total):
            raise DownloadError(f"{url}: got {part.stat().st_size:,} of {start + int(total):,} bytes; {part} "
                                "is kept, run again to resume")
    found = md5sum(part)
    if found != md5:
        part.unlink()
        raise DownloadError(f"{url}: MD5 {found} differs from the published {md5}; the file was deleted "
                            "(corrupted in transit or replaced on the server); run again")
    os.replace(part, dest)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    """The member's relative path, or ``DownloadError`` if it could write outside the target folder."""
    path = PurePosixPath(member.name)
    if member.issym() or member.islnk():
        raise DownloadError(f"{archive}: member {member.name!r} is a link; refusing to extract the archive")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: member {member.name!r} is not a file or folder; refusing to extract")
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")) or (
        path.parts and ":" in path.parts[0]
    ):
        raise DownloadError(f"{archive}: member {member.name!r} would leave the target folder; refusing to "
                            "extract the archive")
    return path


def extract_tar(archive: str | os.PathLike[str], target: str | os.PathLike[str]) -> list[Path]:
    """Unpack ``archive`` (any tar compression) into ``target``, all or nothing.

    Every member is checked before anything is written; the files are unpacked into a hidden temporary
    folder inside ``target`` and each top-level entry is then renamed into place, replacing an older copy.

    Returns:
        The top-level entries now in ``target``.

    Raises:
        DownloadError: for a member that is a link, a device, an absolute path or contains ``..`` (nothing
            is written), or an archive that cannot be read.
    """
    archive, target = Path(archive), Path(target)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise DownloadError(f"{archive} is not a readable tar archive ({err}); delete it, run again") from err
    with tar:
        members = [(m, _check_member(m, archive)) for m in tar.getmembers()]
        target.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
        try:
            for member, path in members:
                out = tmp.joinpath(*path.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has a stream
                with source, open(out, "wb") as f:
                    shutil.copyfileobj(source, f, CHUNK)
            return [_move_into(entry, target) for entry in sorted(tmp.iterdir())]
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DownloadError(f"{archive}: extraction failed ({err}); delete it and run again") from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into(entry: Path, target: Path) -> Path:
    """Rename ``entry`` to ``target/entry.name``, replacing what is there (the old copy is removed after)."""
    dest = target / entry.name
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=target)) / entry.name
        os.replace(dest, old)
    os.replace(entry, dest)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)
    return dest
