"""Checkpoint files on disk: reading the tensors of a file or folder safely, and our own safetensors weights.

- `CheckpointFiles`, `weight_files`, `read_json`: the tensors and config of a checkpoint in any of the formats the
  loaders read (safetensors, or .bin/.pt state dicts read with `weights_only=True`: nothing is ever unpickled).
- `load_weights`, `save_weights`: the safetensors files that carry weights between the training stages (our own key
  names, checked key by key and shape by shape).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

PathLike = str | Path


# ----------------------------------------------------------------------------------------------------------------
# Reading tensors safely


class CheckpointFiles(Mapping[str, torch.Tensor]):
    """The tensors of a checkpoint file or folder (shards + index), read lazily, keys renamed by `rename`.

    safetensors files are memory-mapped tensor by tensor; .bin/.pt files are read with `weights_only=True`.
    """

    def __init__(self, path: PathLike, rename: Callable[[str], str] = lambda k: k) -> None:
        self.path = Path(path)
        self.files = weight_files(self.path)
        self._where: dict[str, tuple[Path, str]] = {}  # our key name -> (file, key in that file)
        self._pickled: dict[Path, dict[str, torch.Tensor]] = {}
        for file in self.files:
            for key in self._file_keys(file):
                name = rename(key)
                if name in self._where:
                    raise ValueError(f"{self.path}: key {key!r} appears twice (as {name!r}) in {file.name} and "
                                     f"{self._where[name][0].name}")
                self._where[name] = (file, key)

    def _file_keys(self, file: Path) -> list[str]:
        if file.suffix == ".safetensors":
            with open_safetensors(file) as f:
                return list(f.keys())
        return list(self._load_pickled(file))

    def _load_pickled(self, file: Path) -> dict[str, torch.Tensor]:
        if file not in self._pickled:
            try:
                try:
                    obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
                    obj = torch.load(file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                raise ValueError(f"{file}: not a plain state dict of tensors, refused without unpickling it (a "
                                 f"TorchScript file such as OpenAI's ViT-L-14.pt is not supported; use the "
                                 f"open_clip or safetensors release): {exc}") from None
            except (RuntimeError, EOFError, ValueError, OSError) as exc:  # truncated or not a torch file at all
                raise ValueError(f"{file}: not a readable .bin/.pt state dict (truncated or corrupt?): "
                                 f"{type(exc).__name__}: {exc}") from None
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a training checkpoint
                obj = obj["state_dict"]
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise ValueError(f"{file}: expected a dict of tensors (a state dict)")
            self._pickled[file] = obj
        return self._pickled[file]

    def __getitem__(self, name: str) -> torch.Tensor:
        file, key = self._where[name]
        if file.suffix == ".safetensors":
            with open_safetensors(file) as f:
                try:
                    return f.get_tensor(key)
                except Exception as exc:  # noqa: BLE001 - a header that promises more bytes than the file has
                    raise ValueError(f"{file}: tensor {key!r} is not readable (truncated or corrupt file?): "
                                     f"{exc}") from None
        return self._load_pickled(file)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return str(self.path)


def weight_files(path: Path) -> list[Path]:
    """The weight files of a checkpoint: the file itself, the shards an index names, or the files in a folder.

    safetensors win over .bin when a folder has both (hub repositories often ship both).
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index}: no 'weight_map' (a shard index maps each key to its shard file)")
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (path / s).exists()]
            if missing:
                raise FileNotFoundError(f"{index}: shard {missing[0]} is missing")
            return [path / s for s in shards]
    for pattern in ("*.safetensors", "*.bin"):
        files = sorted(path.glob(pattern))
        if files:
            return files
    raise FileNotFoundError(f"{path}: no weight files (*.safetensors or *.bin)")


def read_json(path: Path) -> dict:
    """A JSON object from a file; a missing file, bad JSON or a non-object is an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 JSON text file: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")  # noqa: TRY004
    return obj


@contextmanager
def open_safetensors(file: PathLike):
    """`safe_open(file)`, with a truncated or corrupt file refused by name (the library's error names none)."""
    try:
        handle = safe_open(str(file), "pt")
    except FileNotFoundError:
        raise FileNotFoundError(f"{file} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean an unreadable file
        raise ValueError(f"{file}: not a readable safetensors file: {exc}") from None
    with handle as f:
        yield f


def load_safetensors(file: PathLike) -> dict[str, torch.Tensor]:
    """`load_file(file)`, with a truncated or corrupt file refused by name."""
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise FileNotFoundError(f"{file} does not exist") from None
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{file}: not a readable safetensors file: {exc}") from None


# ----------------------------------------------------------------------------------------------------------------
# Our weights between training stages


def read_weights(module: nn.Module, path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file of `module`'s weights (our key names); every key must match in name and shape.

    `module` may live on the meta device: only its keys and shapes are used.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} weights {path} do not exist")
    state = load_safetensors(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{what} weights {path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise ValueError(f"{what} weights {path}: {key} has shape {tuple(tensor.shape)}, "
                             f"model expects {tuple(own[key].shape)}")
    return state


def load_weights(module: nn.Module, path: str | Path, what: str) -> None:
    """Load a safetensors file into `module`; every key must match in name and shape."""
    module.load_state_dict(read_weights(module, path, what))


def save_weights(module: nn.Module, path: str | Path, exclude: tuple[str, ...] = ()) -> None:
    """Save `module`'s state dict, less the keys in `exclude`, as a safetensors file (its folder is created)."""
    save_state({k: v for k, v in module.state_dict().items() if k not in exclude}, path)


def save_state(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Save a state dict as a safetensors file (its folder is created)."""
    with writing(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


@contextmanager
def writing(path: PathLike):
    """Writing output at `path`: an OS error (read-only folder, a file where a folder should be, a full disk) is
    re-raised as one line naming `path`; safetensors' own write errors are OS errors too."""
    for parent in Path(path).parents:  # a file where a folder should be: say which
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise type(exc)(f"cannot write {path}: {exc}") from None
        raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # safetensors reports a failed write as SafetensorError
        if type(exc).__name__ == "SafetensorError":
            raise OSError(f"cannot write {path}: {exc}") from None
        raise
