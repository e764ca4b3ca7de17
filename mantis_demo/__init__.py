"""The one-command pipeline behind ``demo.py``: train, export, serve, run the edge side, report."""
