"""Helpers of the checkout (tests, benchmarks, the load test, ``make serve``); not installed."""
