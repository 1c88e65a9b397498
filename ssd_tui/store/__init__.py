"""The run database: the only package that holds SQL."""
