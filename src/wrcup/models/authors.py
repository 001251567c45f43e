"""The networks the authors of WRC trained: read their ``torch.save`` files without running code from them.

Their training script saves a dict with ``"wrc"`` (the 2× upsampler's state dict, named as in
:data:`wrcup.models.upsampler.REFERENCE_MODULE_NAMES`), ``"optimizer_wrc"``, ``"epoch"`` and ``"cfg"`` (a pickled
OmegaConf configuration). ``torch.load(weights_only=True)`` refuses such a file because of the configuration
object, and ``weights_only=False`` would let the pickle call any function it names. So this module reads the
archive itself (a zip: ``<root>/data.pkl`` plus one ``<root>/data/<key>`` record per storage) with a restricted
unpickler (:class:`pickle.Unpickler` with ``find_class`` and ``persistent_load`` overridden):

- a fixed allowlist of globals resolves to real objects: plain containers, torch dtypes, ``torch.Size``,
  ``torch.device``, the storage types, and torch's tensor rebuild functions, which are replaced by our own (they
  only make strided views of the file's storages);
- every other global becomes an inert :class:`Placeholder` class, nothing is imported. The pickle may create
  instances of it and give them state (NEWOBJ/BUILD: that is how ordinary objects such as the config are
  stored, and it is data only), but CALLING it, which is how a pickle runs a function, raises
  :class:`UnsafePickleError` naming the global.

The configuration is reported as plain data (:func:`plain_data`), the weights are checked entry by entry against
the network (:meth:`~wrcup.models.upsampler.WRCUpsampler.load_reference_state_dict`). Files in the legacy
(non-zip, torch < 1.6) format are refused with a clear error.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .._io import file_sha256
from .upsampler import WRCUpsampler

__all__ = [
    "AuthorsCheckpoint",
    "AuthorsCheckpointError",
    "Placeholder",
    "UnsafePickleError",
    "convert_authors_checkpoint",
    "find_state_dict",
    "plain_data",
    "read_authors_checkpoint",
    "read_torch_file",
]

# Key prefixes their evaluation code strips (DataParallel's "module.", and "wrc." from a wrapping module).
STATE_DICT_PREFIXES = ("module.", "wrc.")
# The operator of their network: the closed form exactly as they evaluate it.
AUTHORS_OPERATOR = "wrc-reference"


class AuthorsCheckpointError(ValueError):
    """The file is not a readable checkpoint of the authors' network."""


class UnsafePickleError(AuthorsCheckpointError):
    """The file's pickle asks to call a function outside the allowlist (it would run code when loaded)."""


# ------------------------------------------------------------------------------------------- placeholders
class _PlaceholderType(type):
    """Metaclass of placeholders: calling one (pickle REDUCE, or INST/OBJ with arguments) is refused."""

    def __call__(cls, *args, **kwargs):
        raise UnsafePickleError(f"its pickle calls {cls.pickle_global}, a function or class outside the allowlist "
                                "(loading it would run code); refused")


class Placeholder(metaclass=_PlaceholderType):
    """Stands in for a class the reader does not know. Instances keep, as data, the arguments the pickle gave to
    ``__new__`` (``args``, ``kwargs``) and the state it gave to ``__setstate__`` (``state``)."""

    pickle_global = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.kwargs, self.state = args, kwargs, None
        return self

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickle_global}>"


def _placeholder(module: str, name: str) -> type:
    return _PlaceholderType(name.rsplit(".", 1)[-1], (Placeholder,), {
        "pickle_global": f"{module}.{name}", "__module__": __name__, "__qualname__": f"Placeholder[{module}.{name}]"})


# ----------------------------------------------------------------------------------- storages and tensors
@dataclass(frozen=True)
class _StorageType:
    """What a pickled storage class (``torch.FloatStorage`` …) resolves to: just its dtype."""

    dtype: torch.dtype


class _Storage:
    """One storage record of the archive as a flat tensor (only :class:`_TorchFileUnpickler` makes these)."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Replaces ``torch._utils._rebuild_tensor_v2``: a strided view of one of the file's storages (bounds checked;
    gradients flags, hooks and metadata are ignored)."""
    if not isinstance(storage, _Storage):
        raise AuthorsCheckpointError(f"a tensor refers to {type(storage).__name__}, not to a storage of the file")
    size, stride, offset = tuple(int(v) for v in size), tuple(int(v) for v in stride), int(storage_offset)
    try:
        return torch.as_strided(storage.flat, size, stride, offset)
    except RuntimeError as err:
        raise AuthorsCheckpointError(f"a tensor of size {size} does not fit its storage: {err}") from None


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """Replaces ``torch._utils._rebuild_parameter(_with_state)``: the parameter's tensor."""
    if not isinstance(data, torch.Tensor):
        raise AuthorsCheckpointError(f"a parameter holds {type(data).__name__}, not a tensor")
    return data


def _rebuild_from_type(func, new_type, args, state=None):
    """Replaces ``torch._tensor._rebuild_from_type_v2``: rebuild with an allowed function, keep a plain tensor."""
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise UnsafePickleError(f"its pickle rebuilds a tensor with {getattr(func, 'pickle_global', func)!r}, "
                                "which is outside the allowlist; refused")
    return func(*args)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,  # stores its factory; never calls it while loading
    **{("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bool)},
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch", name): value for name, value in vars(torch).items() if isinstance(value, torch.dtype)},
}


class _TorchFileUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip archive: allowlisted globals, placeholders for the rest, storages
    read from the archive's records."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._root = archive, root
        self._storages: dict[str, _Storage] = {}
        self._placeholders: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        # Python 2 names (protocol ≤ 2 pickles say "__builtin__.dict"), mapped as the standard unpickler does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        key = (module, name)
        if key not in self._placeholders:
            self._placeholders[key] = _placeholder(module, name)
        return self._placeholders[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise AuthorsCheckpointError(f"unsupported persistent record {str(pid)[:80]!r} (only tensor storages)")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise AuthorsCheckpointError(f"unsupported storage type {getattr(storage_type, 'pickle_global', storage_type)!r}")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            record = f"{self._root}/data/{key}"
            try:
                raw = self._archive.read(record)
            except KeyError:
                raise AuthorsCheckpointError(f"the archive has no storage record {record!r}") from None
            dtype = storage_type.dtype
            if len(raw) != int(numel) * dtype.itemsize:
                raise AuthorsCheckpointError(f"storage record {record!r} holds {len(raw)} bytes, expected "
                                             f"{numel} × {dtype.itemsize}")
            flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            self._storages[key] = _Storage(flat)
        return self._storages[key]


# torch.save's legacy format starts with this number, pickled (protocol 2, LONG1 of 10 bytes).
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def read_torch_file(path: str | Path):
    """What ``torch.save`` wrote to ``path``, unpickled with the restricted unpickler (see the module docstring).

    Tensors come back as plain CPU tensors; unknown classes as :class:`Placeholder` instances.
    Raises FileNotFoundError, :class:`UnsafePickleError` (naming the global it refused to call) or
    :class:`AuthorsCheckpointError` (legacy format, not a torch file, damaged archive).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(len(_LEGACY_MAGIC))
        if head == _LEGACY_MAGIC or tarfile.is_tarfile(path):
            raise AuthorsCheckpointError(
                f"{path} uses torch.save's legacy format (torch < 1.6), which this reader does not support; "
                "re-save its state dict with a recent torch (torch.save(state_dict, 'new.pth'))")
        raise AuthorsCheckpointError(f"{path} is not a torch.save file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise AuthorsCheckpointError(f"{path} is a zip archive but not a torch.save file "
                                             f"({len(pickles)} '<root>/data.pkl' records)")
            root = pickles[0][: -len("/data.pkl")]
            names = set(archive.namelist())
            order = archive.read(f"{root}/byteorder").decode() if f"{root}/byteorder" in names else "little"
            if order != sys.byteorder:
                raise AuthorsCheckpointError(f"{path} stores {order}-endian tensors; this machine is {sys.byteorder}-endian")
            return _TorchFileUnpickler(archive.read(pickles[0]), archive, root).load()
    except AuthorsCheckpointError as err:
        message = str(err)
        raise type(err)(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, AttributeError, TypeError, ValueError, KeyError,
            IndexError, RuntimeError) as err:
        raise AuthorsCheckpointError(f"{path}: cannot read its pickled data ({type(err).__name__}: {err})") from None


# --------------------------------------------------------------------------------------------- plain data
def plain_data(obj, _path: tuple = (), _depth: int = 0):
    """JSON-ready data for what :func:`read_torch_file` returned (e.g. their config).

    OmegaConf containers and value nodes become their content; other placeholders become
    ``{"__class__": "module.Name", **state}``; classes their qualified name; tensors a list (≤ 8 values) or a
    short description; non-finite floats a string. Cycles and nesting beyond 64 levels are cut.
    """
    if id(obj) in _path or _depth > 64:
        return "<cycle>" if id(obj) in _path else "<too deep>"
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    inner = _path + (id(obj),)

    def sub(value):
        return plain_data(value, inner, _depth + 1)

    if isinstance(obj, type):
        return getattr(obj, "pickle_global", f"{obj.__module__}.{obj.__qualname__}")
    if isinstance(obj, Placeholder):
        state = obj.state
        if obj.pickle_global.startswith("omegaconf.") and isinstance(state, dict):
            for content in ("_content", "_val"):  # containers hold "_content", value nodes "_val"
                if content in state:
                    return sub(state[content])
        out = {"__class__": obj.pickle_global}
        if obj.args:
            out["args"] = sub(list(obj.args))
        if obj.kwargs:
            out["kwargs"] = sub(obj.kwargs)
        if isinstance(state, dict):
            out.update({str(k): sub(v) for k, v in state.items() if k != "__class__"})
        elif state is not None:
            out["state"] = sub(state)
        return out
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(sub(k))): sub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [sub(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist() if obj.numel() <= 8 else f"tensor {list(obj.shape)} {obj.dtype}"
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, complex):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex() if len(obj) <= 32 else f"<{len(obj)} bytes>"
    return repr(obj)[:200]


# ------------------------------------------------------------------------------------------- checkpoints
def find_state_dict(obj) -> tuple[dict[str, torch.Tensor], str]:
    """The network's state dict inside what the file held → ``(entries, where)``.

    Accepted, as the authors' evaluation code does: a dict with ``"wrc"`` (their training checkpoint), a dict
    with ``"state_dict"``, or a bare state dict; ``module.``/``wrc.`` prefixes are stripped from the keys.
    ``where`` is ``"wrc"``, ``"state_dict"`` or ``"bare"``.
    """
    if not isinstance(obj, dict):
        raise AuthorsCheckpointError(f"the file holds {type(obj).__name__}, expected a dict (a checkpoint with a "
                                     "'wrc' or 'state_dict' entry, or a state dict)")
    where = next((k for k in ("wrc", "state_dict") if k in obj), "bare")
    entries = obj if where == "bare" else obj[where]
    if not isinstance(entries, dict) or not entries:
        raise AuthorsCheckpointError(f"entry {where!r} of the file is {type(entries).__name__}, expected a "
                                     "non-empty state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in entries.items():
        if not isinstance(value, torch.Tensor):
            what = "the file" if where == "bare" else f"entry {where!r}"
            hint = " (it has no 'wrc' or 'state_dict' entry and is not a state dict itself)" if where == "bare" else ""
            raise AuthorsCheckpointError(f"{what} is not a state dict: {key!r} holds {type(value).__name__}{hint}")
        name = str(key)
        while name.startswith(STATE_DICT_PREFIXES):
            name = name.split(".", 1)[1]
        if name in state:
            raise AuthorsCheckpointError(f"keys {key!r} and another one both become {name!r} without their prefixes")
        state[name] = value.detach().clone()
    return state, where


@dataclass
class AuthorsCheckpoint:
    """What :func:`read_authors_checkpoint` found.

    Attributes:
        state_dict: the network's entries under the authors' names (prefixes stripped), CPU tensors.
        found_in: ``"wrc"``, ``"state_dict"`` or ``"bare"`` (see :func:`find_state_dict`).
        epoch: their ``"epoch"`` entry (None when absent or not an int).
        cfg: their ``"cfg"`` entry as plain data (:func:`plain_data`; None when absent).
        file_name, sha256: the source file's name and the sha256 of its bytes.
    """

    state_dict: dict[str, torch.Tensor]
    found_in: str
    epoch: int | None
    cfg: object
    file_name: str
    sha256: str


def read_authors_checkpoint(path: str | Path) -> AuthorsCheckpoint:
    """Read one of the authors' files (training checkpoint or state dict) without running code from it."""
    obj = read_torch_file(path)
    try:
        state, where = find_state_dict(obj)
    except AuthorsCheckpointError as err:
        raise AuthorsCheckpointError(f"{path}: {err}") from None
    epoch = obj.get("epoch") if where == "wrc" else None
    cfg = obj.get("cfg") if where == "wrc" else None
    return AuthorsCheckpoint(state_dict=state, found_in=where,
                             epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
                             cfg=None if cfg is None else plain_data(cfg), file_name=Path(path).name,
                             sha256=file_sha256(path))


def convert_authors_checkpoint(path: str | Path, backbone: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """One of the authors' files → ``(state_dict, metadata)`` of a wrcup checkpoint (write it with
    :func:`wrcup.models.checkpoint.save_checkpoint`; ``wrcup.load`` then serves it).

    The channel count comes from the weights (``outc``: dim output channels); the patch size from the backbone,
    whose dim must match. The network is the "wrc-reference" operator without the residual connection, i.e.
    their network as they ran it; every entry's name and shape is checked.

    Args:
        path: their ``.pth`` file.
        backbone: the backbone the network was trained on (default: the embedded ``dinov2-s14-imgfocus``,
            384 channels, patch 14).
    """
    from .. import __version__, backbones

    backbone = backbones.DEFAULT_BACKBONE if backbone is None else backbone
    ckpt = read_authors_checkpoint(path)
    head = ckpt.state_dict.get("outc.bias", ckpt.state_dict.get("head.bias"))  # their name, or ours
    if head is None or head.dim() != 1:
        raise AuthorsCheckpointError(f"{path}: no 1-d 'outc.bias' entry to read the channel count from; "
                                     f"is this the authors' WRC upsampler? (first keys: {list(ckpt.state_dict)[:3]})")
    dim = int(head.shape[0])
    backbone_dim, patch_size = backbones.geometry(backbone)
    if backbone_dim != dim:
        raise ValueError(f"the network in {path} works on {dim} channels but backbone {backbone!r} has "
                         f"{backbone_dim}; choose a {dim}-channel backbone")
    model = WRCUpsampler(dim, patch_size, operator=AUTHORS_OPERATOR, residual=False)
    try:
        model.load_reference_state_dict(ckpt.state_dict)
    except ValueError as err:
        raise AuthorsCheckpointError(f"{path}: {err}") from None
    state = model.state_dict()
    for name, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise AuthorsCheckpointError(f"{path}: entry {model.reference_key_map()[name]!r} has non-finite values")
    metadata = {
        "backbone": backbone, "dim": dim, "patch_size": patch_size, "operator": AUTHORS_OPERATOR, "residual": False,
        "source": {"kind": "authors-checkpoint", "file": ckpt.file_name, "sha256": ckpt.sha256,
                   "state_dict_entry": ckpt.found_in, "epoch": ckpt.epoch, "cfg": ckpt.cfg},
        "code_version": {"wrcup": __version__},
    }
    return state, metadata
