"""Keyword names kept for one release after a rename, with a DeprecationWarning; warnings that point at the
user's code."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed_keywords(*name: str, **renames: str) -> Callable[[F], F]:
    """``@renamed_keywords(interval="interval_s")``: a call that passes ``interval=`` still works, as if it had
    passed ``interval_s=``, and warns (DeprecationWarning, pointing at the caller).  Passing both is a
    TypeError.  The function's signature (``inspect.signature``) shows only the new names.  ``name`` (optional,
    positional): the name the messages give the function (default: its qualified name)."""

    def decorate(func: F) -> F:
        where = name[0] if name else func.__qualname__.replace(".__init__", "")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError("%s() got both %s= and %s=: %s is the old name of %s; pass only %s="
                                        % (where, old, new, old, new, new))
                    warn_renamed(where, old, new, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def warn_renamed(where: str, old: str, new: str, stacklevel: int = 2) -> None:
    warnings.warn("%s: %s is deprecated and will be removed in the next release; use %s (the same value)"
                  % (where, old, new), DeprecationWarning, stacklevel=stacklevel + 1)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the caller of this function that points at the first frame
    outside the joulecap package (the user's call), however many joulecap frames lie between."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level
