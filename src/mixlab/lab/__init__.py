"""The lab: ``mixlab compare/train/preview/datasets`` (see :mod:`mixlab.lab.cli`).

Trains a model with and without mixup from the same initial weights and data order, on real
data, and reports accuracy, NLL and calibration. ``lam`` weights the ORIGINAL row everywhere:
``mixed = lam * x + (1 - lam) * x[index]``.

It needs the ``lab`` extra: ``pip install "mixlab[lab]"`` (torchvision, matplotlib, tqdm,
scikit-learn, pillow; scipy comes with scikit-learn). The ``mixlab`` command checks, before any
work, that the subcommand's packages import, and otherwise names them in one line (status 2).
"""
