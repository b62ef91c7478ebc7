"""``python -m controller.cli``: the same as the ``cutover`` console script."""

from controller.cli.app import main

main()
