"""Research probes of the detector, each run as `python -m training.probes.NAME --help` from the repository root."""
