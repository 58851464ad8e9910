"""Migration scripts, applied in order by `scanner db upgrade`."""
