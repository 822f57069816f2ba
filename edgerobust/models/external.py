"""The user's own models: an import path `package.module:factory`, or a name an installed package registers in the
entry-point group `edgerobust.models` (importlib.metadata), beside the zoo.

A factory is a function or class returning an `nn.Module` that maps N×C×H×W inputs to N×classes logits; it is
called with the recipe's `[model] kwargs`, plus `num_classes`, `input_shape` and `in_channels` where its signature
takes them and the kwargs do not set them. `build_external` returns the record that rebuilds the model (the import
path or entry point, the kwargs, and the providing distribution's name and version); `RunDir.load_model` rebuilds it
from that record, and a model that no longer imports is one `ModelImportError` line saying what failed and what was
recorded.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ..errors import EdgeRobustError

ENTRY_POINT_GROUP = "edgerobust.models"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*$")


class ModelImportError(EdgeRobustError):
    """A user model that cannot be imported or built: the import that failed, or what the factory raised."""


def is_import_path(spec: str) -> bool:
    """`package.module:factory` (an attribute path after the colon), as opposed to a zoo spec like scnn2:16-32."""
    return bool(IMPORT_PATH.match(spec))


def entry_points() -> dict[str, metadata.EntryPoint]:
    """The models installed packages register, by name (the first registration of a name wins, as Python's own
    entry-point lookup does)."""
    found: dict[str, metadata.EntryPoint] = {}
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, point)
    return found


def is_external(spec: str) -> bool:
    return is_import_path(spec) or spec in entry_points()


def _distribution(module_name: str) -> tuple[str | None, str | None]:
    """(distribution name, version) that installs top-level package `module_name`, or (None, None)."""
    names = metadata.packages_distributions().get(module_name.split(".")[0], [])
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def resolve(spec: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The factory `spec` names and the record of where it came from (kind, import/entry_point, package, version)."""
    if is_import_path(spec):
        module_name, _, attribute = spec.partition(":")
        source: dict[str, Any] = {"kind": "import", "import": spec}
    else:
        point = entry_points().get(spec)
        if point is None:
            raise ModelImportError(f"model '{spec}' is neither in the zoo, an installed entry point of group "
                                   f"{ENTRY_POINT_GROUP}, nor an import path package.module:factory")
        module_name, attribute = point.module, point.attr  # (an entry point's [extras] are not part of either)
        source = {"kind": "entry-point", "entry_point": spec, "import": f"{module_name}:{attribute}"}
        if point.dist is not None:
            source.update(package=point.dist.name, version=point.dist.version)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it imports
        raise ModelImportError(f"model '{spec}': cannot import module '{module_name}' ({_reason(exc)})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelImportError(f"model '{spec}': module '{module_name}' has no attribute '{attribute}'")
        target = getattr(target, part)
    if not callable(target):
        raise ModelImportError(f"model '{spec}': {attribute} is an object of type {type(target).__name__}, not a "
                               "function or class returning an nn.Module")
    if "package" not in source:
        package, version = _distribution(module_name)
        source.update(package=package, version=version)
    return target, source


def build_external(spec: str, input_shape: Sequence[int], num_classes: int,
                   kwargs: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The module the factory returns and the record that rebuilds it (`describe_source`)."""
    factory, source = resolve(spec)
    call = dict(kwargs or {})
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: kwargs only
        parameters = {}
    extra = {"num_classes": int(num_classes), "input_shape": tuple(int(s) for s in input_shape),
             "in_channels": int(input_shape[0])}
    passed = {k: v for k, v in extra.items() if k in parameters and k not in call}
    try:
        module = factory(**call, **passed)
    except Exception as exc:  # the user's code: its message, once, in one line
        raise ModelImportError(f"model '{spec}': {source['import']}(**{call}) raised {_reason(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ModelImportError(f"model '{spec}': {source['import']} returned a {type(module).__name__}, not a "
                               "torch.nn.Module")
    return module, {**source, "kwargs": call, "passed": sorted(passed)}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def recorded(source: Mapping[str, Any]) -> str:
    """What a run recorded about its model's origin, for the line saying it cannot be rebuilt."""
    package = source.get("package")
    made_by = f"package {package} {source.get('version') or ''}".strip() if package else "no installed package"
    return f"recorded: {source.get('kind', 'import')} {source.get('import')}, kwargs {source.get('kwargs') or {}}, " \
           f"{made_by}"
