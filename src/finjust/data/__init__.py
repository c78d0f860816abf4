"""Reading, validating, templating and splitting training data, and checking its quality.

``readers`` (file types) -> ``load`` (each record through its ``formats`` entry into an
``example.Example``) -> ``prepare`` (sources, splits, manifest) for training; ``check``
streams the same files into a ``report.QualityReport`` whose ``gate`` decides whether
training may start.
"""
