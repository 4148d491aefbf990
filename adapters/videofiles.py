"""Where the command line saves videos: checked before anything is paid, never over an
earlier file, and somewhere else rather than nowhere when the place asked for fails."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bot import messages

FRESH_NAMES = 1000  # name-1 .. name-999 are tried before giving up on a folder


def save_fresh(source: Path, wanted: Path) -> Path:
    """Copy ``source`` to ``wanted``, or to ``wanted`` with ``-1``, ``-2``… before its suffix
    when that name is taken: an earlier video is never overwritten. The copy is made under
    a hidden partial name first and then linked into place, so a name holds the whole video
    or nothing, even when the process is killed halfway (the next run saves it afresh);
    linking fails on a taken name, so two processes never pick one. OSError when the
    folder cannot take it; a partial copy is removed."""
    partial = wanted.with_name(f".kling-{secrets.token_hex(4)}.part")  # short: any name fits
    try:
        with partial.open("xb") as out, source.open("rb") as data:
            shutil.copyfileobj(data, out)
        for candidate in _names(wanted):
            try:
                os.link(partial, candidate)
            except FileExistsError:  # a file, or a folder, by that name
                continue
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                    raise
                return _copy_exclusively(source, wanted)  # a file system without hard links
            return candidate
    finally:
        partial.unlink(missing_ok=True)
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(wanted))


def _names(wanted: Path) -> Iterator[Path]:
    yield wanted
    for n in range(1, FRESH_NAMES):
        yield wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")


def _copy_exclusively(source: Path, wanted: Path) -> Path:
    """``save_fresh`` where files cannot be linked: written in place under a fresh name."""
    for candidate in _names(wanted):
        try:
            out = candidate.open("xb")
        except FileExistsError:
            continue
        try:
            with out, source.open("rb") as data:
                shutil.copyfileobj(data, out)
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise
        return candidate
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(wanted))


def unwritable_because(folder: Path) -> str | None:
    """Why a video could not be saved into ``folder`` (created if missing), or None when
    it can: a file is really created and removed there, which also catches read-only
    disks and the permissions a superuser ignores."""
    for place in (folder, *folder.parents):
        if place.exists() or place.is_symlink():
            if not place.is_dir():
                return messages.not_a_folder(place)
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".kling-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        return str(err.strerror or err)
    return None
