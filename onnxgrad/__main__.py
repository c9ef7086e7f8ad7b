"""``python -m onnxgrad``: the same command line as the ``onnxgrad`` script."""

from .cli import main

main()
