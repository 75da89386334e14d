"""Would replace the sandbox runtime if the agent's folder came first on sys.path."""
import os

os._exit(42)
