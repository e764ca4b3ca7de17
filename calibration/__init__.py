"""Validation of a finished bundle: how its int8 edge client compares with the float model it came from.

The calibration itself (choosing the calibration set, the activation observers, quantizing) happens in
``export/`` (``export/calibration_set.py``, ``export/quantize.py``); this package measures its outcome:

- ``int8_accuracy.py``: float vs int8 per-task accuracy through the real codec (``check.py``, ``int8_check.json``)
- ``observer_choice.py``: one bundle per activation observer, checked and compared (``compare_observers.py``)
- ``layer_sensitivity.py``: accuracy recovered by keeping each layer in float (``sensitivity.py``)
- ``int8_curve.py``: the int8 client's rate-accuracy curve against JPEG and WebP
- ``device.py``: the edge runtime on an emulated aarch64 device against this machine (``device_check.py``)
- ``startup.py``: start-up time of the edge command
"""
