"""The ``vocaseg`` command line: a thin layer over the Python API (see ``main.py``)."""
