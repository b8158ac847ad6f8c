"""`ingero demo`: real workloads over the bundled simulated CUDA library, traced by the
real probes, explained by the analysis, with each scenario's expected root cause."""
