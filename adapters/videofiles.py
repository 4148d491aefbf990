"""Where the command line saves videos: checked before anything is paid, never over an
earlier file, and somewhere else rather than nowhere when the place asked for fails."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from bot import messages

FRESH_NAMES = 1000  # name-1 .. name-999 are tried before giving up on a folder


def save_fresh(source: Path, wanted: Path) -> Path:
    """Copy ``source`` to ``wanted``, or to ``wanted`` with ``-1``, ``-2``… before its suffix
    when that name is taken: an earlier video is never overwritten (the new file is
    created exclusively, so two processes never pick one name). OSError when the folder
    cannot take it; a partial copy is removed."""
    for n in range(FRESH_NAMES):
        candidate = wanted if n == 0 else wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")
        try:
            out = candidate.open("xb")
        except FileExistsError:  # a file, or a folder, by that name
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
