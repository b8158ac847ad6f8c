"""Capture: finding what to trace and running the native tracer on it."""
