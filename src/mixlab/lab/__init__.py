"""The lab: ``mixlab compare/train/preview/datasets`` (see :mod:`mixlab.lab.cli`).

Trains a model with and without mixup from the same initial weights and data order, on real
data, and reports accuracy, NLL and calibration. ``lam`` weights the ORIGINAL row everywhere:
``mixed = lam * x + (1 - lam) * x[index]``.
"""
