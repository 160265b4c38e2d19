"""mixlab-lab: the ``mixlab`` command (``compare``, ``train``, ``preview``, ``datasets``, ``bench``).

Trains a model with and without mixup from the same initial weights and data order, on real
data, and reports accuracy, NLL, calibration and label-noise robustness with intervals and a
verdict. It uses the ``mixlab`` library through its public API only. ``lam`` weights the
ORIGINAL row everywhere: ``mixed = lam * x + (1 - lam) * x[index]``.

Its dependencies come with the distribution (``pip install ./lab``); the ``mixlab`` command still
checks, before any work, that the subcommand's packages import, and names any that does not in
one line (status 2).
"""
__version__ = "0.3.0.dev0"
