"""The ``finjust`` command line: a thin layer over the library."""
