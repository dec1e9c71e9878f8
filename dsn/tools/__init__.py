"""Developer tools run with ``python -m``: benchmarks and the README screenshots."""
