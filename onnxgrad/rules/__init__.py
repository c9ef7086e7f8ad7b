"""Built-in gradient rules, one module per operator family.

Importing this package registers every rule; the registry (``onnxgrad ops``) is the table of
what is covered.
"""

import importlib
import pkgutil

from ..registry import loading_builtins

with loading_builtins():
    for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{_mod}")
