"""The steps: each module's `main(settings)` wires one library job to its MLflow run and
prints the result (progress on stderr, one JSON line last on stdout). `python -m pipeline`
parses the settings first (pipeline/cli.py). No step imports another (tests/test_rules.py)."""
