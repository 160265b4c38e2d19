"""The execution forms behind :func:`mixlab.mix`, public for benchmarks and for users who pick a form themselves.

:func:`mixlab.mix` chooses among these from static facts (device, dtype, sizes, compiling or not); they
all compute ``lerp(src[index[i]], x[i], lam[i])`` per row (``lam`` weights the original row ``x[i]``),
in float32 or wider, rounded once to the batch's dtype.

- :func:`choose_form`: the form ``mix`` would take for a batch (``"rows"``, ``"cycles"``, ``"chunks"`` or
  ``"vector"``);
- :func:`lerp_gather`: the out-of-place forms, optionally into a caller's buffer (``out=``);
- :func:`compiled_lerp_gather`: the vector form compiled with ``torch.compile`` (one fused pass);
- :func:`lerp_perm_inplace`, :func:`lerp_flip_inplace`: the in-place forms for any partner rows / flip pairing;
- :func:`row_threads`: how the CPU row loops use threads (``"auto"``: torch's threads or one thread, whichever
  measures faster while the loop runs; one thread wins when other work holds the cores);
- :func:`huge_pages`: whether fresh CPU outputs of 8 MiB and more are advised onto transparent huge pages.
"""
from ._fast import (ROW_THREADS_POLICIES, choose_form, compiled_lerp_gather, huge_pages, lerp_flip_inplace,
                    lerp_gather, lerp_perm_inplace, row_threads)

__all__ = ["choose_form", "lerp_gather", "compiled_lerp_gather", "lerp_perm_inplace", "lerp_flip_inplace",
           "row_threads", "ROW_THREADS_POLICIES", "huge_pages"]
