"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for vlp's weight-carrying modules.

A module that inherits :class:`HubMixin` records the arguments it was built with; it saves
them as ``config.json`` beside its weights in ``model.safetensors`` (the file names
``huggingface_hub.PyTorchModelHubMixin`` uses), and rebuilds itself from such a directory
or from a Hugging Face Hub repository. ``huggingface_hub`` is imported only when a
repository id (not a local directory) is loaded or a module is pushed, so that neither
``import vlp`` nor saving and loading on local disk imports it.

Constructor arguments that are modules (the encoders of an S-SMKE student) are not
saved: their weights are in ``model.safetensors``, and ``from_pretrained`` takes freshly
built ones of the same architecture as keyword arguments. Devices are not saved either.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "HubMixin"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_CLASS_KEY = "_vlp_class"
_MODULES_KEY = "_vlp_module_arguments"
_DTYPE_KEY = "__torch_dtype__"
_SKIPPED = frozenset(("device",))

M = TypeVar("M", bound="HubMixin")


def _encode(name: str, value: Any) -> Any:
    """A JSON value for constructor argument ``name``, or raise ``TypeError``."""
    if isinstance(value, _Unsaved):
        raise TypeError(f"argument {value.what} cannot be saved in {CONFIG_NAME}")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"argument {name}={value!r} is not a finite number")
        return value
    if isinstance(value, torch.dtype):
        return {_DTYPE_KEY: str(value).removeprefix("torch.")}
    if isinstance(value, (list, tuple)):
        return [_encode(name, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(name, v) for k, v in value.items()}
    raise TypeError(
        f"argument {name} of type {type(value).__name__} cannot be saved in {CONFIG_NAME}"
    )


class _Unsaved:
    """Stands for a recorded argument that cannot go into ``config.json``."""

    def __init__(self, what: str) -> None:
        self.what = what


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_DTYPE_KEY}:
            dtype = getattr(torch, str(value[_DTYPE_KEY]), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{CONFIG_NAME}: unknown torch dtype {value[_DTYPE_KEY]!r}")
            return dtype
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _renamed(init: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with deprecated keyword names (``vlp.losses._renamed``) made current."""
    renames = getattr(init, "__vlp_renames__", None)
    if not renames or not any(old in kwargs for old in renames):
        return kwargs
    out = dict(kwargs)
    for old, target in renames.items():
        if old in out:
            new, convert = (target, None) if isinstance(target, str) else target
            value = out.pop(old)
            out[new] = value if convert is None else convert(value)
    return out


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class HubMixin:
    """Save and load an ``nn.Module`` as ``config.json`` + ``model.safetensors``.

    Subclasses get :meth:`save_pretrained`, :meth:`from_pretrained` and
    :meth:`push_to_hub`. The arguments of the subclass's ``__init__`` are recorded when it
    is called; they must be JSON values, ``torch.dtype`` or ``nn.Module`` (modules are
    passed again to ``from_pretrained``); ``device`` is never saved.
    """

    _hub_config: dict[str, Any]
    _hub_modules: dict[str, str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            state = self.__dict__
            outermost = "_hub_pending" not in state and "_hub_config" not in state
            if outermost:  # the class actually built records, not its bases
                try:
                    bound = signature.bind(self, *args, **_renamed(init, kw))
                except TypeError:
                    init(self, *args, **kw)  # let __init__ report its own arguments
                    return
                bound.apply_defaults()
                config: dict[str, Any] = {}
                modules: dict[str, str] = {}
                for name, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[name].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        items = list(value.items())
                    elif kind is inspect.Parameter.VAR_POSITIONAL:
                        config[f"*{name}"] = _Unsaved(f"*{name} (positional varargs)")
                        continue
                    else:
                        items = [(name, value)]
                    for key, item in items:
                        if key in _SKIPPED:
                            continue
                        if isinstance(item, nn.Module):
                            modules[key] = _qualified(type(item))
                        else:  # encoded when saved: __init__ checks its arguments first
                            config[key] = item
                object.__setattr__(self, "_hub_pending", (config, modules))
            init(self, *args, **kw)
            if outermost:
                config, modules = self.__dict__.pop("_hub_pending")
                object.__setattr__(self, "_hub_config", config)
                object.__setattr__(self, "_hub_modules", modules)

        cls.__init__ = recording_init  # type: ignore[method-assign]

    # -- saving -------------------------------------------------------------------------

    @property
    def hub_config(self) -> dict[str, Any]:
        """The saved configuration: constructor arguments (JSON) and the class name."""
        out: dict[str, Any] = {_CLASS_KEY: _qualified(type(self))}
        out.update({k: _encode(k, v) for k, v in self._hub_config.items()})
        if self._hub_modules:
            out[_MODULES_KEY] = dict(self._hub_modules)
        return out

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into a directory.

        Args:
            save_directory: the directory (created if missing; files are overwritten).

        Returns:
            The directory.
        """
        from safetensors.torch import save_model

        assert isinstance(self, nn.Module)
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.hub_config, indent=2) + "\n")
        save_model(self, str(path / WEIGHTS_NAME))
        return path

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload with vlp",
    ) -> Any:
        """Save into a temporary directory and upload it to a Hub model repository.

        Imports ``huggingface_hub`` (only here and in :meth:`from_pretrained` for a
        repository id). The repository is created if it does not exist.

        Args:
            repo_id: ``"user/name"``.
            token: Hub token (default: the logged-in one).
            private: visibility of a new repository.
            revision: branch to push to.
            commit_message: the commit message.

        Returns:
            ``huggingface_hub``'s commit information.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                revision=revision,
                commit_message=commit_message,
            )

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls: type[M],
        pretrained: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        strict: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> M:
        """Build the module from a directory or a Hub repository and load its weights.

        Args:
            pretrained: a local directory holding ``config.json`` and
                ``model.safetensors`` (as :meth:`save_pretrained` writes), or a Hub model
                id ``"user/name"`` (downloaded with ``huggingface_hub``, cached).
            device: where to put the module (default: the CPU).
            dtype: cast the floating parameters after loading (default: the constructor's
                dtype in the config; weights stored in another dtype are cast to it).
            strict: every key of the file must match the module's and vice versa.
            revision: Hub branch, tag or commit (Hub ids only; as all four below,
                passed to ``huggingface_hub.hf_hub_download``).
            cache_dir: download cache directory (default: the Hub's).
            token: Hub token, for private repositories.
            local_files_only: use the cache only, never the network.
            **kwargs: constructor arguments: the module arguments that were not saved
                (for example ``image_encoder=`` and ``text_encoder=`` of an S-SMKE
                student, built with the same architecture) and overrides of saved ones.

        Returns:
            The module, in eval mode (as ``huggingface_hub``'s mixin returns it); call
            ``.train()`` to fine-tune.

        Raises:
            FileNotFoundError: if a local directory lacks one of the two files.
            ValueError: if the config belongs to another class or a module argument is
                missing, or (``strict``) the weights do not match the module.
        """
        from safetensors.torch import load_model

        config_file, weights_file = _resolve(
            pretrained,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        try:
            config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_file}: not valid JSON ({err})") from err
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: expected a JSON object")
        saved_class = config.pop(_CLASS_KEY, None)
        if saved_class is not None and saved_class != _qualified(cls):
            saved = saved_class.rpartition(".")[2]
            if saved != cls.__name__:
                raise ValueError(f"{config_file} holds a {saved_class}, not a {_qualified(cls)}")
        needed = config.pop(_MODULES_KEY, {})
        missing = [name for name in needed if name not in kwargs]
        if missing:
            raise ValueError(
                f"{cls.__name__}.from_pretrained needs the module argument(s) {missing} "
                f"(of classes {[needed[m] for m in missing]}; their weights are in the file, "
                "their architecture is not): build them as for the saved model and pass "
                "them as keywords"
            )
        for name, saved_type in needed.items():
            given = type(kwargs[name])
            if given.__name__ != saved_type.rpartition(".")[2]:
                raise ValueError(f"{name} was a {saved_type} when saved, got a {_qualified(given)}")
        arguments = {k: _decode(v) for k, v in config.items()}
        arguments.update(kwargs)
        module = cls(**arguments)
        assert isinstance(module, nn.Module)
        if device is not None:
            module.to(device)
        missing_keys, unexpected = load_model(
            module, str(weights_file), strict=False, device=str(device or "cpu")
        )
        if strict and (missing_keys or unexpected):
            raise ValueError(
                f"{weights_file} does not match {cls.__name__}: missing {sorted(missing_keys)}, "
                f"unexpected {sorted(unexpected)}"
            )
        if dtype is not None:
            module.to(dtype=dtype)
        return module.eval()


def _resolve(
    pretrained: str | Path,
    *,
    revision: str | None,
    cache_dir: str | Path | None,
    token: str | None,
    local_files_only: bool,
) -> tuple[Path, Path]:
    path = Path(pretrained)
    if path.is_dir():
        files = (path / CONFIG_NAME, path / WEIGHTS_NAME)
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{path}: no {f.name} (written by save_pretrained)")
        return files
    name = str(pretrained)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        raise FileNotFoundError(
            f"{name}: not a directory holding {CONFIG_NAME} and {WEIGHTS_NAME}, nor a Hub "
            "model id of the form 'user/name'"
        )
    hub = importlib.import_module("huggingface_hub")
    download = functools.partial(
        hub.hf_hub_download,
        repo_id=name,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        local_files_only=local_files_only,
        library_name="vlp",
    )
    return Path(download(filename=CONFIG_NAME)), Path(download(filename=WEIGHTS_NAME))
