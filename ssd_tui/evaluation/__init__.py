"""Judging programs: the sandbox, test programs and verdicts, pass@k, suspect samples."""
