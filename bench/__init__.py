"""Scripts that print figures (benchmarks), never pass/fail tests."""
