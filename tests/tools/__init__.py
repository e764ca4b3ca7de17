"""Tools for the codec's test material: shared vectors, long fuzzing, the throughput benchmark, and a small
fitted ``EntropyBottleneck`` they build on. Run from the repository root as ``python -m tests.tools.NAME``."""
