"""The bundle's model on Triton Inference Server.

- ``decode.py``, ``server_half.py``, ``answer.py``: the Python-backend models (each becomes a model
  version's ``model.py``; ``export/triton_repository.py`` writes the repository), on ``common.py`` and the
  server's own checks and answers (``runtime_server/answers.py``);
- ``install.py``: Triton 2.51 (PyPI's ``nvidia-pytriton``) and the models' Python environment under ``runs/triton``;
- ``process.py``: ``tritonserver`` as a child process for the tests and benchmarks.

Not named ``triton``: a script run from ``runtime_server/`` would otherwise shadow OpenAI's ``triton``
package, which torch imports.
"""
