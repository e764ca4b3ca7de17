"""Benchmarks and measurement tools, apart from the product: each is ``python -m benchmarks.NAME`` and
writes its results as JSON under ``results/`` (``benchmarks.results``); ``python -m benchmarks.report``
renders ``docs/results.md`` and the README's headline table from those files. No product package imports
this one."""
