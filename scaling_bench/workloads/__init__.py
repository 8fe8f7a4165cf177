"""The workloads, registered as they are imported: ``BUILTIN`` is the one registration line.

A plugin module (``scaling-bench run --plugin MODULE``, or an entry point in the
``scaling_bench.plugins`` group) registers more the same way; ``load_plugins`` imports them, and
the engine names them in each job file so that workers import them too.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

from scaling_bench.core.errors import UserError

BUILTIN = ("forward", "train", "checkpoint", "convergence", "inference")
ENTRY_POINT_GROUP = "scaling_bench.plugins"

for _name in BUILTIN:
    importlib.import_module(f"scaling_bench.workloads.{_name}")


def load_plugins(modules: Iterable[str] = ()) -> tuple[str, ...]:
    """Import ``modules`` and the installed entry points; return every plugin module loaded.
    Whatever a plugin raises while it imports (its own error, a workload name registered
    twice) is the user's to fix: one line naming the plugin and the error, not a traceback."""
    names = [*(ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)), *modules]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UserError(f"--plugin {name}: cannot import it ({exc})") from None
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(
                f"--plugin {name}: raised {type(exc).__name__} while importing: {first}"
            ) from None
    return tuple(dict.fromkeys(names))
