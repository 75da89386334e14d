"""Named like codecbench's sandbox package, to shadow it if the bundle came first on sys.path."""
