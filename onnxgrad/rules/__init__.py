"""Built-in gradient rules, one module per operator family.

Importing this package registers every rule; the registry (``onnxgrad ops``) is the table of
what is covered. A new family is a new module here, listed below.
"""

from ..registry import loading_builtins

with loading_builtins():
    from . import (  # noqa: F401  (each module registers its rules on import)
        activation,
        attention,
        causal_conv,
        controlflow,
        conv,
        dropout,
        einsum,
        elementwise,
        indexing,
        linalg,
        nondiff,
        normalization,
        pool,
        quantization,
        recurrent,
        reduction,
        resize,
        sampling,
        scans,
        selection,
        sequence,
        shape,
        softmax,
        spectral,
    )
