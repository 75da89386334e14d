"""Reference agents. Each folder is one agent bundle with its own README."""
