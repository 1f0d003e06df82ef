"""Which modules of a model are measured as layers (select_layers), and the import of PyTorch."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from ..errors import InvalidArgument


def _import_torch():
    try:
        import torch
    except ImportError:
        raise InvalidArgument(
            "LayerwiseMeasurementTool measures torch.nn models, and PyTorch is not installed: "
            "pip install torch (or 'joulecap[torch]')"
        ) from None
    return torch


def _is_container(m: Any, nn: Any) -> bool:
    return isinstance(m, (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict))


def _owns_parameters(m: Any) -> bool:
    return any(p is not None for p in m._parameters.values())


def _does_work(m: Any, nn: Any) -> bool:
    """A module whose own forward does something: a leaf (not an empty container), or a module holding
    parameters of its own (MultiheadAttention computes its input projection itself, without its children)."""
    if _is_container(m, nn):
        return False
    has_children = next(iter(m.children()), None) is not None
    if not has_children:
        return not (isinstance(m, nn.Sequential))  # an empty Sequential is the identity
    return _owns_parameters(m)


def select_layers(model: Any, depth: Optional[int] = None) -> List[Tuple[str, Any]]:
    """The (qualified name, module) pairs measured for ``depth``, in the model's order.

    ``depth=None``: modules that do work of their own: leaf modules, and modules that hold parameters directly
    (their children, if called, are measured apart: times are exclusive).  ``depth=k``: the modules whose
    qualified name has k parts (``layer3.1`` has 2), plus modules doing work above that depth, so that the rows
    cover the model; ``depth=0`` is the whole model as one layer.  A module shared under several names is
    measured once, under its first name, with all its calls.
    """
    torch = _import_torch()
    nn = torch.nn
    if not isinstance(model, nn.Module):
        raise InvalidArgument("start(model): model must be a torch.nn.Module, not %s" % type(model).__name__)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise InvalidArgument("depth=%r: pass None (leaf modules) or an int >= 0 (0 is the whole model)" % (depth,))
    named = list(model.named_modules())
    if depth == 0:
        return [("", model)]
    out = []
    for name, m in named:
        if name == "":
            # The root itself: only when it does work of its own besides its children (a ViT's class token).
            if depth is None and next(iter(m.children()), None) is not None and _owns_parameters(m):
                out.append((name, m))
            continue
        d = name.count(".") + 1
        if depth is None:
            if _does_work(m, nn):
                out.append((name, m))
        elif d == depth:
            if not _is_container(m, nn):
                out.append((name, m))
        elif d < depth and _does_work(m, nn):
            out.append((name, m))
    return out
