"""Driving runs: starting, locking and stepping them; the pipeline, sweeps, the record, diffs."""
