"""Opening a run database or an export for review, read-only; ``.db.gz`` accepted.

``resolve_run_db`` is the one rule for what a command's RUN argument names: a run folder
stands for its ``run.db``."""

from __future__ import annotations

import gzip
import shutil
import tempfile
import weakref
import zlib
from pathlib import Path

from ssd_tui.errors import SSDError
from ssd_tui.store.run_store import RunStore

_GZIP_MAGIC = b"\x1f\x8b"
RUN_DB = "run.db"  # a run folder's database (RUN_DIR/run.db)


def resolve_run_db(path: str | Path) -> Path:
    """The run database ``path`` names: a run folder's ``run.db``, else the file itself
    (a run DB or an export; opening it says whether it is one).

    Every command that takes a run DB takes it through here, so a run folder is accepted
    wherever a run DB is. Raises `SSDError` when there is nothing there, or a folder
    without a run database.
    """
    p = Path(path)
    if p.is_dir() and (p / RUN_DB).is_file():
        return p / RUN_DB
    if p.is_dir():
        raise SSDError(f"{path} is a folder without a run database ({RUN_DB}) in it")
    if not p.exists():
        raise SSDError(f"run database not found: {path}")
    return p


def open_export(path: str | Path) -> RunStore:
    """Open an export (or any run database) read-only for review; ``.db.gz`` is accepted.

    A gzipped file (recognised by its content, not its name) is decompressed into a
    temporary folder that is removed when the store is closed (or garbage-collected).
    Raises `SSDError` for a missing, damaged or unsupported file.
    """
    p = Path(path)
    if not _is_gzip(p):
        return RunStore.open(p, readonly=True)
    tmpdir = Path(tempfile.mkdtemp(prefix="ssd-tui-review-"))
    name = p.name[:-3] if p.name.endswith(".gz") else p.name + ".db"
    tmp = tmpdir / (name or "export.db")
    try:
        try:
            with gzip.open(p, "rb") as f_in, open(tmp, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out, 1 << 20)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise SSDError(f"{p} is a damaged gzip file ({e})") from None
        except OSError as e:
            raise SSDError(f"cannot decompress {p}: {e.strerror or e}") from None
        try:
            store = _TempStore.open(tmp, readonly=True)
        except SSDError as e:
            raise SSDError(str(e).replace(str(tmp), str(p))) from None
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    store._tmpdir = tmpdir
    store._cleanup = weakref.finalize(store, shutil.rmtree, tmpdir, True)
    return store


class _TempStore(RunStore):
    """A review store over a decompressed temporary copy; closing it removes the copy."""

    _tmpdir: Path | None = None
    _cleanup: weakref.finalize | None = None

    def close(self) -> None:
        super().close()
        if self._cleanup is not None:
            self._cleanup()


def _is_gzip(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(2) == _GZIP_MAGIC
    except OSError:
        return False  # missing, a folder, unreadable: RunStore.open says which
