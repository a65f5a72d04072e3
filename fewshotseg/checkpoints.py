"""Checkpoint files and run folders: written atomically, read safely, checked before use.

A checkpoint is a dict of tensors and plain Python values (`fewshotseg.training.Trainer`
writes ``model``, ``model_config``, ``optimizer``, ``step``, ``config``, ``version``, ...).
`save_checkpoint` adds ``content_sha256``, a SHA-256 over every tensor's bytes, dtype and shape
and every plain value (keys in sorted order, so it does not depend on how the file was
serialised), and writes through a temporary file renamed over the target. `load_checkpoint`
reads with ``torch.load(weights_only=True)`` (a file that holds code is refused, never run) and
then checks, in this order:

1. the file is a readable torch file (a truncated or empty file is an error naming it);
2. the hash, when the file has one (older files, such as the shipped ``chaos_ssl.pt``, have
   none and load as before);
3. the structure and bounds of the metadata (``model_config``, ``image_size``, ``modality``,
   ``step``), so a damaged file cannot make inference allocate gigabytes;
4. every floating-point weight is finite;
5. a ``version`` newer than this fewshotseg gives a warning.

`RunFolderLock` keeps two trainings out of one checkpoint folder; `clean_stale_temp_files`
removes what an interrupted save left behind. What a checkpoint's ``image_size`` and
``modality`` mean for its inputs, and the checkpoints shipped in the package, are
`fewshotseg.weights`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fewshotseg._version import __version__

__all__ = [
    "CONTENT_HASH_KEY",
    "MAX_IMAGE_SIZE",
    "RunFolderBusyError",
    "RunFolderLock",
    "clean_stale_temp_files",
    "content_hash",
    "load_checkpoint",
    "load_model_state",
    "read_torch_file",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CONTENT_HASH_KEY = "content_sha256"
"""The checkpoint key holding the SHA-256 of everything else in it (`content_hash`)."""
MAX_IMAGE_SIZE = 2048
"""The largest ``image_size`` a checkpoint may name (the paper trains at 256)."""
LOCK_NAME = ".lock"
_TEMP_FILE = re.compile(r"^\..+\.\d+\.tmp$")  # what _atomic_write leaves when killed mid-save


# ------------------------------------------------------------------------------- hashing


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, Tensor):
        flat = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
        h.update(memoryview(flat.view(torch.uint8).numpy()))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(
            f"a checkpoint holds tensors and plain Python values only, got {type(obj).__name__}"
        )


def content_hash(checkpoint: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content, leaving out its own ``content_sha256`` entry.

    Tensors count by dtype, shape and bytes (not by device or memory layout); dict keys are
    taken in sorted order.

    Example:
        >>> a = {"w": torch.ones(2), "step": 3}
        >>> content_hash(a) == content_hash({"step": 3, "w": torch.ones(2)})
        True
        >>> content_hash(a) == content_hash({"w": torch.ones(2), "step": 4})
        False
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in checkpoint.items() if k != CONTENT_HASH_KEY})
    return h.hexdigest()


# ------------------------------------------------------------------------------- writing


def _atomic_write(obj: Any, path: Path) -> None:
    """torch.save to ``.<name>.<pid>.tmp`` in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint dict atomically, with its `content_hash` under ``content_sha256``.

    Args:
        checkpoint: tensors (any device, dtype and shape) and plain Python values, nested in
            dicts, lists and tuples; anything else raises `TypeError`.
        path: the file; parent folders are created.

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/run/last.pt"
        >>> save_checkpoint({"model": {"w": torch.ones(2)}, "step": 3}, path)
        >>> sorted(read_torch_file(path))
        ['content_sha256', 'model', 'step']
    """
    payload = {k: v for k, v in checkpoint.items() if k != CONTENT_HASH_KEY}
    payload[CONTENT_HASH_KEY] = content_hash(payload)
    _atomic_write(payload, Path(path))


# ------------------------------------------------------------------------------- reading


def read_torch_file(path: str | os.PathLike, *, what: str = "checkpoint",
                    map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    A missing, empty, truncated or non-torch file raises `FileNotFoundError`/`ValueError`
    naming it and what was expected; a file that holds pickled code (anything but tensors and
    plain values) is refused with a `ValueError` that says so: it is never executed.

    Args:
        path: the file.
        what: what to call it in error messages (``"backbone weights file"``).
        map_location: as in ``torch.load``; CPU by default.

    Returns:
        What the file holds (no checks beyond ``weights_only``; see `load_checkpoint`).

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/w.pt"
        >>> torch.save({"w": torch.zeros(2, 3, dtype=torch.float16)}, path)
        >>> read_torch_file(path)["w"].dtype
        torch.float16
        >>> open(path, "wb").close(); read_torch_file(path)
        Traceback (most recent call last):
        ...
        ValueError: checkpoint '...w.pt' is empty (0 bytes); expected a file written by ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path.name!r} not found in {str(path.parent.resolve())!r}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(
            f"{what} {str(path)!r} is empty (0 bytes); expected a file written by torch.save "
            "(was a copy or a save interrupted?)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        culprit = f" (it names {found.group(1)})" if found else ""
        raise ValueError(
            f"refusing to load {what} {str(path)!r}: it holds code{culprit}, not only tensors and "
            "plain values, and fewshotseg never runs code from a file. Use a checkpoint written "
            "by fewshotseg, or a state dict of tensors saved with torch.save(model.state_dict())"
        ) from None
    except (EOFError, RuntimeError, OSError, KeyError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(
            f"cannot read {what} {str(path)!r} ({size} bytes): expected a complete file written "
            f"by torch.save; it is truncated or corrupt ({type(err).__name__}: "
            f"{str(err)[:200] or 'no details'})"
        ) from None


def _check_int(value: Any, name: str, low: int, high: int, path: Path) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"checkpoint {str(path)!r} has {name}={value!r}; expected an integer in "
            f"{low}..{high}. The file is damaged or was not written by fewshotseg"
        )


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def _validate(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or not isinstance(
        ckpt.get("model_config"), dict
    ):
        raise ValueError(
            f"{str(path)!r} is not a fewshotseg checkpoint (expected a dict with 'model' and "
            "'model_config' entries)"
        )
    stored = ckpt.get(CONTENT_HASH_KEY)
    if stored is not None:
        actual = content_hash(ckpt)
        if stored != actual:
            raise ValueError(
                f"checkpoint {str(path)!r} is corrupt: its content hash is {actual[:12]}... but it "
                f"was saved as {str(stored)[:12]}...; copy the file again, or use an earlier "
                "checkpoint"
            )
    cfg = ckpt["model_config"]
    if not isinstance(cfg.get("backbone"), (str, type(None))):
        raise ValueError(f"checkpoint {str(path)!r}: model_config['backbone'] must be a name")
    for name, low, high in (("feature_dim", 1, 8192), ("train_window", 1, 512),
                            ("test_window", 1, 512)):  # fmt: skip
        if name in cfg:
            _check_int(cfg[name], f"model_config[{name!r}]", low, high, path)
    if "image_size" in ckpt:
        _check_int(ckpt["image_size"], "image_size", 8, MAX_IMAGE_SIZE, path)
    if "step" in ckpt:
        _check_int(ckpt["step"], "step", 0, 2**62, path)
    if ckpt.get("modality") is not None:
        from fewshotseg.preprocess import check_modality

        where = f"checkpoint {str(path)!r} names an unknown intensity recipe "
        check_modality(ckpt["modality"], where=f"{where}{ckpt['modality']!r}: ")
    bad = []
    for key, value in ckpt["model"].items():
        if not isinstance(value, Tensor):
            raise ValueError(f"checkpoint {str(path)!r}: model entry {key!r} is not a tensor")
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad.append(key)
    if bad:
        raise ValueError(
            f"checkpoint {str(path)!r} has NaN or infinite weights in {len(bad)} tensor(s) "
            f"(e.g. {', '.join(repr(k) for k in bad[:3])}); the run diverged or the file is "
            "damaged: use an earlier checkpoint or a lower learning rate"
        )
    version = ckpt.get("version")
    if isinstance(version, str) and _release(version) > _release(__version__):
        warnings.warn(
            f"checkpoint {str(path)!r} was written by fewshotseg {version}, newer than this "
            f"{__version__}; it may not load correctly: upgrade fewshotseg",
            UserWarning,
            stacklevel=3,
        )


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by `fewshotseg.training.Trainer` (or `pretrained`).

    Reads with ``weights_only=True`` (tensors and plain values; a file holding code is
    refused), verifies the content hash where the file has one, bounds the metadata and
    rejects non-finite weights (see the module's docstring). Errors name the file.

    Returns:
        The checkpoint dict: at least ``model`` (name -> tensor, on ``map_location``) and
        ``model_config`` (plain values), and whatever else was saved.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, truncated, corrupt, holds code, or is not a checkpoint.

    Example:
        >>> import tempfile
        >>> path = f"{tempfile.mkdtemp()}/last.pt"
        >>> save_checkpoint({"model": {"w": torch.ones(2)}, "model_config": {"backbone": "tiny"},
        ...                  "step": 7}, path)
        >>> load_checkpoint(path)["step"]
        7
        >>> save_checkpoint({"model": {"w": torch.tensor([float("nan")])},
        ...                  "model_config": {}}, path)
        >>> load_checkpoint(path)
        Traceback (most recent call last):
        ...
        ValueError: checkpoint '...last.pt' has NaN or infinite weights in 1 tensor(s) ...
    """
    path = Path(path)
    ckpt = read_torch_file(path, what="checkpoint", map_location=map_location)
    _validate(ckpt, path)
    return ckpt


def _shape(t: Any) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, Tensor) else type(t).__name__


def load_model_state(model: nn.Module, state: dict[str, Any], *, source: Any = "the checkpoint"
                     ) -> None:
    """``model.load_state_dict(state)`` (strict), with a mismatch summarised in one sentence.

    Torch lists every missing and unexpected key (tens of thousands of characters for a
    ResNet); this names how many keys are missing, unexpected or of another shape, with up to
    three examples of each (the shapes in the file and in the model).

    Example:
        >>> model = nn.Linear(2, 3)
        >>> load_model_state(model, {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)})
        >>> load_model_state(model, {"weight": torch.zeros(2, 2), "bias": torch.zeros(3)})
        Traceback (most recent call last):
        ...
        ValueError: the checkpoint does not fit this model: 1 shape mismatch(es) (weight: 2x2 ...
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        k for k in expected
        if k in state and isinstance(state[k], Tensor) and state[k].shape != expected[k].shape
    ]  # fmt: skip
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''})")  # fmt: skip
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")  # fmt: skip
        if shapes:
            shown = ", ".join(
                f"{k}: {_shape(state[k])} in the file, {_shape(expected[k])} in the model"
                for k in shapes[:3]
            )
            more = ", ..." if len(shapes) > 3 else ""
            parts.append(f"{len(shapes)} shape mismatch(es) ({shown}{more})")
        config = getattr(model, "model_config", None)
        built = f" (built as {config})" if isinstance(config, dict) else ""
        raise ValueError(
            f"{source} does not fit this model{built}: " + "; ".join(parts)
            + ". Was it trained with another backbone or feature_dim? Rebuild the model from the "
            "checkpoint's model_config (ALPNet.from_config)"
        )
    model.load_state_dict(state)


# --------------------------------------------------------------------------- run folders


def clean_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.<pid>.tmp`` files an interrupted save left in ``folder``.

    Call it only while holding the folder's `RunFolderLock` (a running save's file would look
    the same). Returns the removed paths.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".last.pt.4242.tmp").write_bytes(b"half")
        >>> _ = (folder / "last.pt").write_bytes(b"kept")
        >>> [p.name for p in clean_stale_temp_files(folder)], sorted(os.listdir(folder))
        (['.last.pt.4242.tmp'], ['last.pt'])
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for file in folder.iterdir():
        if _TEMP_FILE.match(file.name) and file.is_file():
            file.unlink(missing_ok=True)
            removed.append(file)
    if removed:
        logger.info("removed %d stale temporary file(s) in %s", len(removed), folder)
    return removed


class RunFolderBusyError(RuntimeError):
    """Another training holds the run folder's lock."""


_HELD: set[str] = set()
_HELD_GUARD = threading.Lock()


class RunFolderLock:
    """An exclusive lock on a run (checkpoint) folder, held by one training at a time.

    POSIX record locks (``fcntl.lockf`` on ``<folder>/.lock``, which also records the owner's
    process id): the system drops the lock when its process dies, however it dies, and forked
    DataLoader workers do not inherit it. Inside one process a registry of held folders plays
    the same part. Where ``fcntl`` does not exist (Windows), the lock is only in-process and a
    warning says so.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with RunFolderLock(folder):
        ...     RunFolderLock(folder).acquire()
        Traceback (most recent call last):
        ...
        fewshotseg.checkpoints.RunFolderBusyError: ...
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._key: str | None = None

    def acquire(self) -> RunFolderLock:
        """Take the lock, or raise `RunFolderBusyError` naming the process that holds it.

        Creates the folder and its ``.lock`` file if needed; returns ``self``.

        Example:
            >>> import tempfile
            >>> lock = RunFolderLock(tempfile.mkdtemp()).acquire()
            >>> lock.path.name, lock.path.read_text().strip() == str(os.getpid())
            ('.lock', True)
            >>> lock.release()
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        with _HELD_GUARD:
            if key in _HELD:
                raise RunFolderBusyError(
                    f"the run folder {str(self.folder)!r} is already in use by another training "
                    f"in this process (pid {os.getpid()}); use another checkpoint folder"
                )
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows
                warnings.warn(
                    "no file locking on this platform: two trainings in one run folder are not "
                    "prevented across processes",
                    RuntimeWarning,
                    stacklevel=2,
                )
                fd = None
            else:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise RunFolderBusyError(
                        f"the run folder {str(self.folder)!r} is in use by another training "
                        f"({self._owner()}; lock file {str(self.path)!r}); wait for it to end or "
                        "stop it, or choose another checkpoint folder"
                    ) from None
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            _HELD.add(key)
            self._fd, self._key = fd, key
        return self

    def _owner(self) -> str:
        try:
            pid = self.path.read_text().split()[0]
        except (OSError, IndexError):
            return "process unknown"
        return f"process {pid}"

    def release(self) -> None:
        """Give the lock back (the lock file stays; it is reused). Safe to call twice.

        Example:
            >>> import tempfile
            >>> folder = tempfile.mkdtemp()
            >>> RunFolderLock(folder).acquire().release()
            >>> RunFolderLock(folder).acquire().release()  # free again
        """
        with _HELD_GUARD:
            if self._fd is not None:
                import fcntl

                fcntl.lockf(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            if self._key is not None:
                _HELD.discard(self._key)
            self._fd = self._key = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
