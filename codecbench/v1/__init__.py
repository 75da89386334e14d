"""Generated protocol code for package ``codecbench.v1`` (``make proto``; do not edit)."""
