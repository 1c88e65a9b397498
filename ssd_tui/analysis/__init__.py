"""Reading rounds: diversity, fork/lock statistics, collapse rules, verdicts on a run."""
