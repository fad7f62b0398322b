"""Download helper for the MovieLens zips, used only when asked (`prepare_data.py --download`).

Streams the zip from GroupLens with a progress bar, checks its MD5 (docs/protocol.md §2), and extracts only
regular members under the archive's top folder into the dataset folder, refusing any member with
an absolute path or a `..` component (path traversal). ml-latest-small changes with each release,
so it has no fixed MD5 here: its MD5 is taken from the `.md5` file GroupLens publishes beside the
zip. Offline, it fails with one line naming the URL and where to put the files by hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from retrieval.core.errors import RecError

BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str | None          # None: read it from `url + ".md5"`
    size: int | None         # expected bytes, when known
    files: tuple[str, ...]   # what the dataset folder must hold afterwards


ARCHIVES = {
    "ml-25m": Archive(f"{BASE_URL}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", 261_978_986,
                      ("ratings.csv", "movies.csv")),
    "ml-latest-small": Archive(f"{BASE_URL}/ml-latest-small.zip", None, None,
                               ("ratings.csv", "movies.csv")),
    "ml-1m": Archive(f"{BASE_URL}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", None,
                     ("ratings.dat", "movies.dat")),
    "ml-100k": Archive(f"{BASE_URL}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", None,
                       ("u.data", "u.item")),
}


def _fail(url: str, folder: Path, reason: str, archive: Archive) -> RecError:
    return RecError(f"could not download {url} ({reason}); download it by hand and unzip "
                    f"{', '.join(archive.files)} into {folder} (or set SEMID_DATA_ROOT)")


def _open(url: str, timeout: float):
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "semid"}),
                                  timeout=timeout)


def published_md5(url: str, timeout: float = 30.0) -> str:
    """The MD5 from GroupLens' `<zip>.md5` file ("MD5 (name.zip) = <hex>" or "<hex>  name")."""
    with _open(url + ".md5", timeout) as r:
        text = r.read(4096).decode("ascii", errors="replace")
    for tok in text.replace("=", " ").split():
        if len(tok) == 32 and all(c in "0123456789abcdefABCDEF" for c in tok):
            return tok.lower()
    raise ValueError(f"no MD5 in {url}.md5")


def fetch(url: str, dest: Path, md5: str | None, size: int | None, timeout: float = 60.0) -> Path:
    """Stream `url` to `dest` (atomically), checking size and MD5; raises OSError/ValueError."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.md5()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, _open(url, timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or size
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        got = os.path.getsize(tmp)
        if size is not None and got != size:
            raise ValueError(f"got {got:,} bytes, expected {size:,}")
        if md5 is not None and h.hexdigest() != md5:
            raise ValueError(f"MD5 {h.hexdigest()} does not match the published {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def safe_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """(member, path below the archive's top folder) for regular files; refuses path traversal."""
    out = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise RecError(f"{zf.filename}: refusing unsafe archive member {info.filename!r} "
                           "(absolute path or '..'); the archive is not the official one")
        if info.is_dir() or len(p.parts) == 0:
            continue
        rel = PurePosixPath(*p.parts[1:]) if len(p.parts) > 1 else p   # strip "ml-25m/"
        out.append((info, rel))
    return out


def extract(zip_path: Path, folder: Path) -> list[Path]:
    """Extract the archive's files into `folder` (flat below the top folder), atomically per file."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise RecError(f"{zip_path}: not a valid zip ({e}); delete it and download again") from None
    written = []
    with zf:
        members = safe_members(zf)
        folder.mkdir(parents=True, exist_ok=True)
        for info, rel in members:
            dest = folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            try:
                with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            written.append(dest)
    return written


def download_movielens(dataset: str, folder: Path, archive: Archive | None = None,
                       timeout: float = 60.0) -> list[Path]:
    """Make sure `folder` holds the dataset's files, downloading the zip when some are missing."""
    if archive is None:
        if dataset not in ARCHIVES:
            raise RecError(f"--download knows only {', '.join(sorted(ARCHIVES))}; put the "
                           f"{dataset!r} files in place by hand")
        archive = ARCHIVES[dataset]
    folder = Path(folder)
    if all((folder / f).is_file() for f in archive.files):
        return []
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    # Mode bits, not os.access: root may write anywhere, but a read-only folder (like the shared
    # ../shared/data copies) says "do not write here".
    if not existing.is_dir() or not existing.stat().st_mode & stat.S_IWUSR:
        raise RecError(f"cannot write to {existing} (read-only); set SEMID_DATA_ROOT to a "
                       "writable folder before --download")
    first_new = None if existing == folder else existing / folder.relative_to(existing).parts[0]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _download_into(archive, folder, timeout)
    except OSError as e:
        raise RecError(f"cannot write to {folder} ({e}); set SEMID_DATA_ROOT to a writable "
                       "folder before --download") from None
    finally:
        # Leave nothing behind on failure: folders created here held only our files.
        if first_new is not None and not all((folder / f).is_file() for f in archive.files):
            shutil.rmtree(first_new, ignore_errors=True)


def _download_into(archive: Archive, folder: Path, timeout: float) -> list[Path]:
    zip_path = folder / Path(archive.url).name
    try:
        md5 = archive.md5 if archive.md5 is not None else published_md5(archive.url, timeout)
        fetch(archive.url, zip_path, md5, archive.size, timeout)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise _fail(archive.url, folder, " ".join(str(reason).split()), archive) from None
    try:
        written = extract(zip_path, folder)
    finally:
        zip_path.unlink(missing_ok=True)
    missing = [f for f in archive.files if not (folder / f).is_file()]
    if missing:
        raise RecError(f"{archive.url}: the archive lacked {', '.join(missing)}; "
                       f"put them into {folder} by hand")
    return written
