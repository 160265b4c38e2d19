"""mixlab.keras on Keras's other backends, each in a subprocess with its KERAS_BACKEND: TensorFlow with
the Keras article's tf.data pipeline (two shuffled streams zipped, mixed in Dataset.map) and JAX through
MixedPyDataset. Skipped where the backend is not installed (`pip install 'mixlab[keras-all]'`)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

DATA = """
import numpy as np
from sklearn.datasets import load_digits
d = load_digits()
x = (np.kron(d.images / 16.0, np.ones((2, 2)))[:, :, :, None]).astype("float32")  # (N, 16, 16, 1)
y = d.target.astype("int64")
x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
def model():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((16, 16, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    return m
"""

TF = DATA + """
import tensorflow as tf
from mixlab.keras import MixUp, CutMix
out = {}
for name, mixer in (("mixup", MixUp(0.2, num_classes=10, seed=1)), ("cutmix", CutMix(1.0, num_classes=10, seed=1))):
    one = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(1400, seed=1).batch(64)
    two = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(1400, seed=2).batch(64)
    ds = tf.data.Dataset.zip((one, two)).map(lambda a, b: mixer(a, b))      # the article's pipeline
    xb, yb = next(iter(ds))
    m = model()
    hist = m.fit(ds, epochs=4, verbose=0)
    _, acc = m.evaluate(x_test, np.eye(10)[y_test], verbose=0)
    out[name] = dict(first=hist.history["loss"][0], last=hist.history["loss"][-1], acc=float(acc),
                     rows=[float(v) for v in np.asarray(yb).sum(1)[:4]], soft=bool((np.asarray(yb).max(1) < 1).any()))
print(json.dumps(out))
"""

JAX = DATA + """
from mixlab.keras import MixUp, MixedPyDataset
class Batches(keras.utils.PyDataset):
    def __init__(self, seed):
        super().__init__()
        self.order = np.random.default_rng(seed).permutation(1400)
    def __len__(self):
        return 1400 // 64
    def __getitem__(self, i):
        idx = self.order[i * 64:(i + 1) * 64]
        return x_train[idx], y_train[idx]
mixer = MixUp(0.2, num_classes=10, seed=1)
m = model()
hist = m.fit(MixedPyDataset(Batches(1), mixer, partner=Batches(2)), epochs=4, verbose=0)
_, acc = m.evaluate(x_test, np.eye(10)[y_test], verbose=0)
xb, yb = MixedPyDataset(Batches(1), mixer, partner=Batches(2))[0]
print(json.dumps({"mixup": dict(first=hist.history["loss"][0], last=hist.history["loss"][-1], acc=float(acc),
                                rows=[float(v) for v in np.asarray(yb).sum(1)[:4]],
                                soft=bool((np.asarray(yb).max(1) < 1).any()))}))
"""


@pytest.mark.parametrize("backend, module, script", [("tensorflow", "tensorflow", TF), ("jax", "jax", JAX)])
def test_keras_backend_trains_with_mixing(backend, module, script, tmp_path):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'mixlab[keras-all]')")
    pytest.importorskip("sklearn")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    code = "import json, keras\n" + textwrap.dedent(script)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for name, r in results.items():
        assert r["last"] < r["first"], (backend, name, r)  # the loss falls
        assert r["acc"] > 0.5, (backend, name, r)  # chance: 0.1
        assert r["soft"], (backend, name, r)  # the labels really were mixed
        assert all(abs(v - 1) < 1e-5 for v in r["rows"]), (backend, name, r)  # soft rows sum to 1
