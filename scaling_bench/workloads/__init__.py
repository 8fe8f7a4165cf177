"""The workloads, registered as they are imported.

Each built-in is ``workloads/{name}.py``, declared in ``catalog``: importing the package declares
them (their names and metric specs, without torch), and ``base`` imports their modules when a
workload is first asked for. A plugin module (``scaling-bench run --plugin MODULE``, or an entry
point in the ``scaling_bench.plugins`` group) registers more with ``base.register``;
``load_plugins`` imports them, and the engine names them in each job file so that workers import
them too.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

from scaling_bench.core.errors import UserError
from scaling_bench.workloads import catalog  # noqa: F401  (declares the built-in workloads)

ENTRY_POINT_GROUP = "scaling_bench.plugins"


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
