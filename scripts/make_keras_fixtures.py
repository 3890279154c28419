"""Write small Keras model files and Keras's own predictions into tests/fixtures/ (needs the `tf` extra).

Each model is trained a few steps by Keras (so its weights, and BatchNorm's moving statistics, are Keras's
own), then saved as a `.keras` archive or a legacy `.h5` file; `keras_outputs.h5` keeps an input batch and
`model.predict` on it per model. tests/test_keras.py reads them without TensorFlow.

    python scripts/make_keras_fixtures.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers as L  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def basic(shape=(9, 9, 3)) -> keras.Model:
    """Every layer xpnn has today, with Keras's activation= strings and a softmax at the end."""
    return keras.Sequential(
        [
            keras.Input(shape),
            L.Conv2D(6, 3, padding="same", activation="relu"),
            L.MaxPooling2D(3, strides=2, padding="same"),
            L.Conv2D(5, 2, strides=2, padding="valid", activation="tanh"),
            L.AveragePooling2D(2, strides=1, padding="same"),
            L.ReLU(),
            L.Flatten(),
            L.Dense(8, activation="sigmoid"),
            L.Softmax(),
            L.Activation("tanh"),
            L.Dense(4, activation="softmax"),
        ]
    )


def new_layers_a(shape=(10, 10, 3)) -> keras.Model:
    """The layers another branch adds: padding, BatchNorm, LeakyReLU, depthwise/separable convs, ELU, Dropout, GAP."""
    return keras.Sequential(
        [
            keras.Input(shape),
            L.ZeroPadding2D(((1, 2), (0, 1))),
            L.Conv2D(4, 3, use_bias=False),
            L.BatchNormalization(momentum=0.9, epsilon=1e-3),
            L.LeakyReLU(negative_slope=0.1),
            L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
            L.ELU(alpha=0.5),
            L.SeparableConv2D(6, 3, padding="same", activation="relu"),
            L.Dropout(0.3, seed=1),
            L.GlobalAveragePooling2D(),
            L.Reshape((2, 3)),
            L.Flatten(),
            L.Dense(5),
        ]
    )


def new_layers_b(shape=(9, 9, 4)) -> keras.Model:
    """Dilated and grouped convs, an Activation by name, GlobalMaxPooling2D."""
    return keras.Sequential(
        [
            keras.Input(shape),
            L.Conv2D(4, 3, dilation_rate=2, groups=2, activation="elu"),
            L.Activation("relu"),
            L.GlobalMaxPooling2D(),
            L.Dense(3, activation="tanh"),
        ]
    )


def unsupported() -> keras.Model:
    """Options and layers xpnn must refuse, all in one file (the error lists each)."""
    return keras.Sequential(
        [
            keras.Input((3, 8, 8)),
            L.Conv2D(2, 3, data_format="channels_first", kernel_constraint=keras.constraints.NonNeg()),
            L.LayerNormalization(),
            L.Flatten(),
            L.Dense(2, kernel_regularizer="l2"),
        ]
    )


def functional() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, L.Dense(2)(L.Dense(3)(inputs)))


def trained(model: keras.Model, x: np.ndarray, classes: int, steps: int = 3) -> keras.Model:
    """A few Adam steps in Keras (BatchNorm's moving statistics move too)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, classes, len(x))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy" if classes else "mse")
    model.fit(x, y, batch_size=max(len(x) // steps, 1), epochs=1, verbose=0, shuffle=False)
    return model


def uncompiled(model: keras.Model) -> keras.Model:
    """The same architecture and weights without the optimizer's variables (keeps the files small)."""
    copy = keras.Sequential.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def main() -> None:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    with h5py.File(OUT / "keras_outputs.h5", "w") as out:

        def keep(name: str, model: keras.Model, x: np.ndarray) -> None:
            uncompiled(model).save(OUT / f"keras_{name}")  # under the floatx the model was built with
            group = out.create_group(name)
            group["x"] = x
            group["y"] = model.predict(x, verbose=0)

        for dtype, fmt in (("float32", "keras"), ("float64", "h5"), ("float64", "keras")):
            keras.config.set_floatx(dtype)
            keras.config.set_dtype_policy(dtype)
            x = rng.uniform(0.0, 1.0, (6, 9, 9, 3)).astype(dtype)
            keep(f"basic_{dtype}.{fmt}", trained(basic(), x, 4), x)
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
        x = rng.normal(0.0, 1.0, (8, 10, 10, 3)).astype("float32")
        model = new_layers_a()
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(x, rng.normal(size=(8, 5)), batch_size=4, epochs=2, verbose=0, shuffle=False)
        keep("new_layers_a.keras", model, x)
        keep("new_layers_b.keras", new_layers_b(), rng.normal(0.0, 1.0, (4, 9, 9, 4)).astype("float32"))
    unsupported().save(OUT / "keras_unsupported.keras")
    functional().save(OUT / "keras_functional.keras")
    for f in sorted(OUT.glob("keras_*")):
        print(f"{f.name}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
