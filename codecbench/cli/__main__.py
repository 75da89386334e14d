"""``python -m codecbench.cli``: the same as the ``codecbench`` command."""

from codecbench.cli import app

app()
