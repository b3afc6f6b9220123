"""Publishing an artifact: one job at a time per output directory, never a partial
artifact, and the previous artifact intact until the new one replaces it.

    with OutputDirectory(output) as out:   # locked; leftovers of killed jobs removed
        ...                                # the job writes its state files under out.staging
        out.publish(manifest)              # state-<hash>/ in place, then manifest.json

The protocol (docs/failure-model.md):
1. Lock: `OUTPUT/.prepro-lock`. Locally an flock, released by the kernel when its
   process dies; on gs:// an object created only if absent (a generation precondition)
   and kept fresh by a heartbeat; elsewhere a best-effort lock object. A second job
   fails at once, naming the holder.
2. Under the lock, what no running job can own is a leftover of a killed one and is
   removed: work directories (`.prepro-work-*`), temporary files (`.prepro-tmp-*`) and
   state directories (`state-*`) the current manifest does not name.
3. The job writes every state file into its own work directory.
4. Publishing moves that directory to `OUTPUT/state-<hash of its files>` and then
   replaces `manifest.json`, which names it, in one atomic write: the commit point.
   Before it, readers see the previous artifact; after it, the new one.
5. State directories other than the new one and the one the replaced manifest named are
   removed; the previous one stays until the next job starts, so a training job that
   loaded the artifact just before can still build its layers.
Only names of these exact shapes are ever deleted: files prepro did not write are
never touched, and a `manifest.json` that is not prepro's is never overwritten.
"""

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import Any, Dict, Optional, Set

from pipelines import failpoints
from prepro import artifacts, fs

LOCK = ".prepro-lock"
WORK_PREFIX = ".prepro-work-"
JOB_PREFIX = ".prepro-job-"
_WORK_DIR = re.compile(r"^\.prepro-work-[0-9a-f]{32}$")
_STATE_DIR = re.compile(r"^state-[0-9a-f]{16}$")
_TEMP_FILE = re.compile(r"^" + re.escape(fs.TEMP_PREFIX) + r"[0-9a-f]{16}$")
LOG = logging.getLogger("prepro.progress")


def job_work_dir(output: str) -> str:
    """The work directory of a pipeline that holds the lock only while it publishes
    (`AnalyzeFeatures`): named so that no other job's clean-up takes it for a leftover
    (`.prepro-job-<id>`; a killed pipeline's stays: delete it, as Beam's own temporary
    directories)."""
    output = output.rstrip("/") if fs.is_remote(output) else output
    return fs.join(output, JOB_PREFIX + uuid.uuid4().hex)


class OutputError(RuntimeError):
    """The output directory cannot take this artifact."""


class OutputBusy(OutputError):
    """Another job is writing the output directory."""


class OutputDirectory:
    """The output directory of one job: locked while the job runs, published once."""

    def __init__(self, output: str, work_dir: Optional[str] = None):
        """`work_dir`: a work directory the job already wrote (an `AnalyzeFeatures`
        pipeline's, locked only to publish: see `job_work_dir`); default a new one."""
        self.output = output.rstrip("/") if fs.is_remote(output) else output
        self.work_dir = work_dir or fs.join(self.output, WORK_PREFIX + uuid.uuid4().hex)
        self.staging = fs.join(self.work_dir, artifacts.STAGING_STATE_DIR)
        self._lock = _lock_for(self.output)
        self._current: Optional[Dict[str, Any]] = None

    def __enter__(self) -> "OutputDirectory":
        _prepare(self.output)
        self._lock.acquire(_owner())
        try:
            self._current = _prepro_manifest(self.output)
            self._remove_leftovers()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            fs.delete([self.work_dir])
        except Exception as e:  # noqa: BLE001  (a leftover the next job removes; never a failed job)
            LOG.warning("could not remove the work directory %s: %s", self.work_dir, e)
        finally:
            self._lock.release()
        return False

    def publish(self, manifest: Dict[str, Any]) -> bytes:
        """Moves the staged state files into place and commits `manifest` (its files
        relative to the state directory); returns the manifest's bytes."""
        state_dir = artifacts.state_dir_name(manifest["files"])
        data = artifacts.manifest_bytes({**manifest, "state_dir": state_dir})
        # What prepro.load will check, checked before anything is replaced: never commit
        # a manifest readers refuse (a base whose state contradicts its figures, say).
        artifacts.validate_manifest(json.loads(data), fs.join(self.output, artifacts.MANIFEST))
        self._lock.check()
        self._place_state(state_dir, manifest["files"])
        failpoints.reach("publish.moved")
        self._lock.check()
        with fs.open_write(fs.join(self.output, artifacts.MANIFEST)) as f:
            f.write(data)
            failpoints.reach("publish.manifest")  # the whole manifest written, not yet in place
        fs.fsync_directory(self.output)
        failpoints.reach("publish.cleanup")
        self._remove_replaced(keep={state_dir, (self._current or {}).get("state_dir")})
        return data

    def _place_state(self, state_dir: str, files: Dict[str, Any]) -> None:
        target = fs.join(self.output, state_dir)
        if _children(self.output) & {state_dir}:
            if _holds(self.output, state_dir, files):  # the same state, published before (a re-run)
                return
            fs.delete([target])  # a partial copy left by a killed job
        if not fs.is_remote(self.staging):
            os.makedirs(self.staging, exist_ok=True)  # a job of stateless features writes no state file
        fs.rename_tree(self.staging, target)
        fs.fsync_directory(self.output)

    def _remove_leftovers(self) -> None:
        named = (self._current or {}).get("state_dir")
        leftovers = sorted(n for n in _children(self.output)
                           if _WORK_DIR.match(n) or _TEMP_FILE.match(n) or (_STATE_DIR.match(n) and n != named))
        if leftovers:
            LOG.info("removing leftovers of earlier jobs in %s: %s", self.output, ", ".join(leftovers))
            fs.delete([fs.join(self.output, n) for n in leftovers])

    def _remove_replaced(self, keep: Set[Optional[str]]) -> None:
        old = sorted(n for n in _children(self.output) if _STATE_DIR.match(n) and n not in keep)
        fs.delete([fs.join(self.output, n) for n in old])
        if self._current and not self._current.get("state_dir"):
            _remove_version1_files(self.output, self._current)


def _prepare(output: str) -> None:
    """Creates a local output directory; refuses a path that is not a directory."""
    if fs.is_remote(output):
        return
    if os.path.lexists(output) and not os.path.isdir(output):
        raise OutputError(f"--output {output} exists and is not a directory")
    os.makedirs(output, exist_ok=True)


def _prepro_manifest(output: str) -> Optional[Dict[str, Any]]:
    """The current manifest (None if there is none); refuses a foreign or unreadable
    `manifest.json`, which prepro will not overwrite."""
    path = fs.join(output, artifacts.MANIFEST)
    if not (fs.exists(path) or (not fs.is_remote(path) and os.path.lexists(path))):
        return None
    try:
        manifest = artifacts.parse_json(artifacts.read_manifest_bytes(output), path)
    except artifacts.ArtifactError as e:
        raise OutputError(f"{e}; prepro does not overwrite what it cannot identify as its own: remove it or "
                          f"choose another --output") from None
    if not isinstance(manifest, dict) or manifest.get("format") != artifacts.FORMAT:
        raise OutputError(f"{path} is not a prepro manifest; prepro never overwrites files it did not "
                          f"write: choose an empty or new --output")
    state_dir = manifest.get("state_dir")
    if state_dir is not None and not (isinstance(state_dir, str) and _STATE_DIR.match(state_dir)):
        raise OutputError(f"{path}: state_dir {state_dir!r} is not a prepro state directory")
    return manifest


def _children(output: str) -> Set[str]:
    """Names directly inside `output` (on an object store: first path components)."""
    if not fs.is_remote(output):
        return set(os.listdir(output)) if os.path.isdir(output) else set()
    prefix = output.rstrip("/") + "/"
    return {p[len(prefix):].split("/", 1)[0] for p in fs.list_tree([output]) if p.startswith(prefix)}


def _holds(output: str, state_dir: str, files: Dict[str, Any]) -> bool:
    """Whether `output/state_dir` holds these files (by size and SHA-256)."""
    try:
        artifacts.StateFiles(output, {"state_dir": state_dir, "files": files}).verify_all()
        return True
    except artifacts.ArtifactError:
        return False


def _remove_version1_files(output: str, manifest: Dict[str, Any]) -> None:
    """A replaced version-1 artifact's files (directly under the root), by the list its
    own manifest gives, and the folders they leave empty."""
    relpaths = [p for p in manifest.get("files", {}) if _is_plain_relpath(p)]
    fs.delete([fs.join(output, p) for p in relpaths])
    if not fs.is_remote(output):
        for folder in sorted({p.split("/")[0] for p in relpaths if "/" in p}):
            try:
                os.rmdir(os.path.join(output, folder))
            except OSError:
                pass  # not empty: something else lives there


def _is_plain_relpath(relpath: Any) -> bool:
    parts = relpath.split("/") if isinstance(relpath, str) else []
    return bool(parts) and all(p and p not in (".", "..") and "\\" not in p and "\0" not in p for p in parts)


def _owner() -> Dict[str, Any]:
    return {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _holder_text(holder: Any) -> str:
    if not isinstance(holder, dict):
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"


def _busy(output: str, holder: Any) -> OutputBusy:
    return OutputBusy(f"{output} is being written by another prepro job ({_holder_text(holder)}); wait for it "
                      f"to finish or choose another --output")


# --- Locks -----------------------------------------------------------------------------

def _lock_for(output: str):
    if not fs.is_remote(output):
        return _LocalLock(output)
    if output.startswith("gs://"):
        return _GcsLock(output)
    return _BestEffortLock(output)


class _LocalLock:
    """An flock on OUTPUT/.prepro-lock: the kernel releases it when its process dies,
    however it dies, so a killed job never leaves the output locked. The file is
    removed on release; a job that opened it just before checks it still holds the
    file at that path, else tries again."""

    def __init__(self, output: str):
        self.output = output
        self.path = os.path.join(output, LOCK)
        self._fd: Optional[int] = None

    def acquire(self, owner: Dict[str, Any]) -> None:
        import fcntl
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o666)
            except OSError as e:
                raise OutputError(f"{self.path}: cannot open the lock file ({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse_json(os.pread(fd, 4096, 0))
                os.close(fd)
                raise _busy(self.output, holder) from None
            try:
                current = os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)  # released and removed between our open and our lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
        self._fd = fd

    def check(self) -> None:
        """An flock cannot be lost while its process lives."""

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


class _HeartbeatLock:
    """A lock object on a remote store, kept fresh by a heartbeat thread. A lock whose
    last heartbeat is older than STALE_SECONDS belongs to a killed job: taken over."""

    STALE_SECONDS = 600.0
    HEARTBEAT_SECONDS = 60.0

    def __init__(self, output: str):
        self.output = output
        self.path = fs.join(output, LOCK)
        self._owner: Optional[Dict[str, Any]] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lost: Optional[str] = None

    def acquire(self, owner: Dict[str, Any]) -> None:
        self._owner = owner
        self._create()
        self._thread = threading.Thread(target=self._beat, name="prepro-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_SECONDS):
            try:
                self._refresh()
            except Exception as e:  # noqa: BLE001  (reported when the job publishes)
                self._lost = f"{type(e).__name__}: {e}"
                return

    def check(self) -> None:
        if self._lost:
            raise OutputError(f"lost the lock on {self.output} ({self._lost}); another job may have taken "
                              f"it over: nothing was published")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            try:
                self._delete()
            except Exception as e:  # noqa: BLE001  (the lock goes stale and is taken over)
                LOG.warning("could not remove the lock %s: %s", self.path, e)

    def _body(self) -> bytes:
        return json.dumps({**self._owner, "heartbeat": time.time()}).encode("utf-8")

    def _stale(self, holder: Any, updated: Optional[float]) -> bool:
        beat = holder.get("heartbeat") if isinstance(holder, dict) else None
        last = max(v for v in (beat, updated, 0.0) if isinstance(v, (int, float)))
        return time.time() - last > self.STALE_SECONDS


class _GcsLock(_HeartbeatLock):
    """gs://: the lock object is created only if no object exists (generation 0
    precondition), refreshed and deleted only at the generation this job wrote, through
    the Cloud Storage client Beam's own gs:// file system uses."""

    def __init__(self, output: str):
        super().__init__(output)
        from apache_beam.io.gcp.gcsio import parse_gcs_path
        bucket, name = parse_gcs_path(self.path)
        self._blob = _storage_client().bucket(bucket).blob(name)
        self._generation: Optional[int] = None

    def _create(self) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed
        for _ in range(3):
            try:
                self._blob.upload_from_string(self._body(), if_generation_match=0)
                self._generation = self._blob.generation
                return
            except PreconditionFailed:
                holder, generation, updated = self._read()
                if generation is None:
                    continue  # released meanwhile
                if not self._stale(holder, updated):
                    raise _busy(self.output, holder) from None
                LOG.warning("taking over the stale lock %s (%s)", self.path, _holder_text(holder))
                try:  # that generation only: a lock rewritten meanwhile is not ours to delete
                    self._blob.bucket.blob(self._blob.name, generation=generation).delete(
                        if_generation_match=generation)
                except (NotFound, PreconditionFailed):
                    pass
        raise _busy(self.output, None)

    def _read(self):
        from google.api_core.exceptions import NotFound
        try:
            blob = self._blob.bucket.get_blob(self._blob.name)
        except NotFound:
            return None, None, None
        if blob is None:
            return None, None, None
        holder = _parse_json(blob.download_as_bytes(if_generation_match=blob.generation))
        return holder, blob.generation, blob.updated.timestamp() if blob.updated else None

    def _refresh(self) -> None:
        self._blob.upload_from_string(self._body(), if_generation_match=self._generation)
        self._generation = self._blob.generation

    def _delete(self) -> None:
        self._blob.bucket.blob(self._blob.name, generation=self._generation).delete(
            if_generation_match=self._generation)


def _storage_client():
    """The Cloud Storage client of Beam's gs:// file system (same credentials and
    project); against a local emulator (STORAGE_EMULATOR_HOST) an anonymous one, as the
    emulator needs no credentials and Beam's search for them takes ~20 s of retries."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.cloud import storage
        return storage.Client.create_anonymous_client()
    from apache_beam.io.gcp.gcsio import GcsIO
    return GcsIO().client


class _BestEffortLock(_HeartbeatLock):
    """File systems without conditional writes (through Beam's FileSystems): the lock
    object is checked, written with this job's id and read back. Two jobs starting in
    the same instant can both pass the check; use gs:// or a local directory for a
    strict lock (docs/failure-model.md)."""

    def _create(self) -> None:
        if fs.exists(self.path):
            holder = _parse_json(fs.read_bytes(self.path))
            if not self._stale(holder, None):
                raise _busy(self.output, holder)
            LOG.warning("taking over the stale lock %s (%s)", self.path, _holder_text(holder))
        fs.write_bytes(self.path, self._body())
        if not self._ours():
            raise _busy(self.output, _parse_json(fs.read_bytes(self.path)))

    def _ours(self) -> bool:
        try:
            holder = _parse_json(fs.read_bytes(self.path))
        except OSError:
            return False
        return isinstance(holder, dict) and holder.get("id") == self._owner["id"]

    def _refresh(self) -> None:
        if not self._ours():
            raise OutputError("the lock object now belongs to another job")
        fs.write_bytes(self.path, self._body())

    def _delete(self) -> None:
        if self._ours():
            fs.delete([self.path])


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
