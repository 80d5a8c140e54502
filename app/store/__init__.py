"""Redis access: the only package that knows key names and data layouts."""
