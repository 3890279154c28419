"""Optimizer options, state and bad input; schedules in optimizers; loss and metric choices (Keras's rules)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import xpnn
from xpnn import Dense, Sequential, Sigmoid, Softmax
from xpnn.io import load_model
from xpnn.losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    double_softmax_warning,
    get_loss,
)
from xpnn.metrics import (
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    default_metrics,
    resolve_metrics,
)
from xpnn.optimizers import SGD, Adagrad, Adam, AdamW, Nadam, RMSprop, get_optimizer, optimizer_from_config
from xpnn.schedules import CosineDecay, ExponentialDecay, PiecewiseConstantDecay


def params(dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 2)).astype(dtype), rng.standard_normal(2).astype(dtype)]


def grads_like(ps, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in ps]


# ---- optimizers: arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: SGD(-0.1), "learning_rate must be >= 0"),
        (lambda: SGD(0.1, momentum=1.5), r"momentum must be in \[0, 1\]"),
        (lambda: SGD(0.1, momentum=-0.1), "momentum"),
        (lambda: RMSprop(rho=2.0), "rho"),
        (lambda: Adam(epsilon=0.0), "epsilon"),
        (lambda: Adam(float("nan")), "finite"),
        (lambda: Adam("0.1"), "number"),
        (lambda: SGD(0.1, clipnorm=1.0, clipvalue=0.5), "only one of clipnorm, clipvalue and global_clipnorm"),
        (lambda: SGD(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: get_optimizer("rmsprp"), "unknown optimizer 'rmsprp'.*Did you mean 'rmsprop'"),
        (lambda: get_optimizer("adamw2"), "Did you mean 'adamw'"),
        (lambda: optimizer_from_config({"class_name": "Optimizer", "config": {}}), "unknown optimizer class"),
        (lambda: PiecewiseConstantDecay([10], [0.1]), "one more value than boundaries"),
        (lambda: ExponentialDecay(0.1, 0, 0.9), "decay_steps must be > 0"),
    ],
)
def test_bad_optimizer_arguments_name_the_problem(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_names_give_keras_defaults():
    for name, cls in [("sgd", SGD), ("rmsprop", RMSprop), ("adamw", AdamW), ("adagrad", Adagrad), ("nadam", Nadam)]:
        assert type(get_optimizer(name)) is cls
    assert get_optimizer("sgd").learning_rate == 0.01
    rms = RMSprop()
    assert (rms.learning_rate, rms.rho, rms.momentum, rms.epsilon, rms.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    assert (AdamW().weight_decay, AdamW().epsilon) == (0.004, 1e-7)
    assert (Adagrad().initial_accumulator_value, Adagrad().epsilon) == (0.1, 1e-7)
    assert Adam().epsilon == 1e-8  # xpnn's reference-run default (Keras: 1e-7), kept so results stay the same


def test_numpy_scalars_are_rates():
    assert Adam(np.float32(0.009)).learning_rate == float(np.float32(0.009))
    assert SGD(np.float64(0.1), momentum=np.float32(0.5)).momentum == 0.5


def test_rate_that_overflows_the_model_dtype_is_refused_at_the_first_step():
    opt = Adam(1e39)
    ps = params("float32")
    with pytest.raises(ValueError, match=r"learning_rate=1e\+39 is not finite in the model's float32"):
        opt.apply(ps, grads_like(ps))
    np.testing.assert_array_equal(ps[0], params("float32")[0])  # nothing was touched
    ps64 = params("float64")
    Adam(1e39).apply(ps64, grads_like(ps64))  # fine in float64
    assert np.isfinite(ps64[0]).all()


def test_schedule_that_returns_nan_names_the_step():
    opt = SGD(lambda step: 0.1 if step < 2 else float("nan"))
    ps = params()
    opt.apply(ps, grads_like(ps))
    opt.apply(ps, grads_like(ps))
    with pytest.raises(ValueError, match="returned nan at step 2"):
        opt.apply(ps, grads_like(ps))


def test_schedule_is_evaluated_at_the_step_before_the_update():
    schedule = PiecewiseConstantDecay([0, 1], [0.5, 0.25, 0.125])
    opt = SGD(schedule)
    seen = []
    for _ in range(3):
        seen.append(opt.learning_rate)
        ps, g = [np.zeros(1)], [np.ones(1)]
        opt.apply(ps, g)
        assert ps[0][0] == -seen[-1]
    assert seen == [0.5, 0.25, 0.125]
    with pytest.raises(TypeError, match="cannot be set to the number"):
        opt.learning_rate = 0.1


def test_plain_function_rate_cannot_be_saved():
    with pytest.raises(ValueError, match="plain function.*cannot be saved"):
        SGD(lambda step: 0.1).get_config()


def test_learning_rate_is_settable_and_part_of_state_config_and_files(tmp_path):
    model = Sequential([Dense(2)], dtype="float64").build((3,))
    opt = RMSprop(0.01, momentum=0.5, centered=True)
    model.train_on_batch(np.ones((4, 3)), np.array([0, 1, 0, 1]), optimizer=opt)
    opt.learning_rate = 0.003
    assert opt.get_config()["learning_rate"] == 0.003 and opt.get_state()["learning_rate"] == 0.003
    other = RMSprop(0.01, momentum=0.5, centered=True)
    other.set_state(opt.get_state())
    assert other.learning_rate == 0.003
    model.save(tmp_path / "m.h5", optimizer=opt)
    back = load_model(tmp_path / "m.h5").optimizer
    assert type(back) is RMSprop and back.learning_rate == 0.003 and back.iterations == 1
    assert back.get_config() == opt.get_config()


def test_schedule_goes_through_config_and_model_files(tmp_path):
    opt = Adam(CosineDecay(0.01, 100, warmup_target=0.1, warmup_steps=10), amsgrad=True, clipnorm=1.0)
    config = json.loads(json.dumps(opt.get_config()))
    again = optimizer_from_config({"class_name": "Adam", "config": config})
    assert again.get_config() == opt.get_config() and again.schedule == opt.schedule
    model = Sequential([Dense(2)], dtype="float32").build((3,))
    model.train_on_batch(np.ones((4, 3)), np.array([0, 1, 0, 1]), optimizer=opt)
    model.save(tmp_path / "m.h5", optimizer=opt)
    back = load_model(tmp_path / "m.h5").optimizer
    assert back.learning_rate == opt.learning_rate == CosineDecay(0.01, 100, warmup_target=0.1, warmup_steps=10)(1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGD(0.1, momentum=0.9, nesterov=True),
        lambda: RMSprop(0.01, momentum=0.3, centered=True),
        lambda: Adam(0.01, amsgrad=True),
        lambda: AdamW(0.01),
        lambda: Adagrad(0.1),
        lambda: Nadam(0.01),
    ],
)
def test_state_round_trip_continues_exactly(make):
    ps = params()
    opt = make()
    for seed in range(3):
        opt.apply(ps, grads_like(ps, seed))
    saved = {k: [np.array(a) for a in v] if isinstance(v, list) else v for k, v in opt.get_state().items()}
    json.dumps({k: v for k, v in saved.items() if not isinstance(v, list)})  # scalars are JSON-friendly
    resumed_ps = [p.copy() for p in ps]
    resumed = make()
    resumed.set_state(saved)
    for seed in range(3, 6):
        opt.apply(ps, grads_like(ps, seed))
        resumed.apply(resumed_ps, grads_like(resumed_ps, seed))
    for a, b in zip(ps, resumed_ps):
        np.testing.assert_array_equal(a, b)


def test_state_is_checked_against_the_parameters():
    ps = params()
    opt = Adam()
    opt.apply(ps, grads_like(ps))
    state = opt.get_state()
    with pytest.raises(ValueError, match="unknown entries"):
        Adam().set_state({**state, "velocity_hat": state["v"]})
    with pytest.raises(ValueError, match="incomplete"):
        Adam().set_state({k: v for k, v in state.items() if k != "v"})
    bad = {**state, "m": [np.zeros((16384, 16)), state["m"][1]]}
    with pytest.raises(ValueError, match=r"'m'\[0\] has shape \(16384, 16\) but parameter 0 has shape \(3, 2\)"):
        Adam().set_state(bad, params=ps)
    with pytest.raises(ValueError, match=r"'v'\[0\] has shape \(3, 2\) but 'm'\[0\] has shape \(16384, 16\)"):
        Adam().set_state(bad)
    resumed = Adam()
    resumed.set_state({**bad, "v": bad["m"]})  # consistent, but not this model's: refused at the first step
    before = [p.copy() for p in ps]
    with pytest.raises(ValueError, match="but parameter 0 has shape"):
        resumed.apply(ps, grads_like(ps))
    for a, b in zip(ps, before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="holds 1 arrays but the model has 2"):
        Adam().set_state({**state, "m": state["m"][:1], "v": state["v"][:1]}, params=ps)
    with pytest.raises(ValueError, match="iterations"):
        Adam().set_state({**state, "iterations": -1})


def test_float64_state_into_a_float32_model_is_cast():
    ps64 = params()
    opt = Adam()
    opt.apply(ps64, grads_like(ps64))
    ps32 = params("float32")
    resumed = Adam()
    resumed.set_state(opt.get_state())
    resumed.apply(ps32, grads_like(ps32))
    assert all(m.dtype == np.float32 for m in resumed.m + resumed.v) and ps32[0].dtype == np.float32


def test_optimizer_refuses_another_models_parameters():
    opt = SGD(0.1, momentum=0.9)
    opt.apply(params(), grads_like(params()))
    with pytest.raises(ValueError, match="use a new optimizer for another model"):
        opt.apply([np.zeros(5)], [np.zeros(5)])


def test_weight_decay_and_clipping_follow_kerass_order():
    """Clip the gradient, then decay w by w·wd·lr, then the update: written out for plain SGD."""
    w, g = np.array([1.0, -2.0]), np.array([3.0, 4.0])
    opt = SGD(0.1, weight_decay=0.5, clipnorm=1.0)
    ps = [w.copy()]
    opt.apply(ps, [g.copy()])
    clipped = g / np.linalg.norm(g)
    decayed = w - w * 0.5 * 0.1
    np.testing.assert_allclose(ps[0], decayed - 0.1 * clipped, rtol=1e-15)


# ---- losses ------------------------------------------------------------------------------------------
def test_softmax_cross_entropy_refuses_other_ranks():
    with pytest.raises(ValueError, match=r"outputs shaped \(batch, classes\).*\(2, 3, 4\)"):
        get_loss("softmax_cross_entropy")(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="labels have shape"):
        get_loss("softmax_cross_entropy")(np.zeros((2, 3)), np.zeros((2, 4)))


def test_keras_names_take_keras_defaults():
    assert isinstance(get_loss("categorical_crossentropy"), CategoricalCrossentropy)
    assert get_loss("categorical_crossentropy").from_logits is False
    assert get_loss("binary_crossentropy").from_logits is False
    assert get_loss("softmax_cross_entropy").from_logits is True
    assert get_loss("mae") is get_loss("mean_absolute_error")
    with pytest.raises(ValueError, match="Did you mean 'huber'"):
        get_loss("hubber")


def test_sparse_labels_as_indices_or_one_hot_rows(backend):
    rng = np.random.default_rng(4)
    probs = rng.uniform(0.05, 1.0, (5, 3))
    classes = np.array([0, 2, 1, 1, 0])
    loss = SparseCategoricalCrossentropy()
    a = loss(backend.asarray(probs), backend.asarray(classes))
    b = loss(backend.asarray(probs), backend.asarray(np.eye(3)[classes]))
    assert float(a[0]) == float(b[0])
    np.testing.assert_array_equal(backend.to_host(a[1]), backend.to_host(b[1]))
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\]"):
        loss(backend.asarray(probs), backend.asarray(np.array([0, 3, 1, 1, 0])))


def test_sample_weight_shape_is_checked():
    with pytest.raises(ValueError, match=r"one weight per sample, shape \(2,\)"):
        get_loss("mse")(np.zeros((2, 3)), np.zeros((2, 3)), sample_weight=np.ones(3))


def test_loss_gradients_are_the_derivative_of_the_cost():
    rng = np.random.default_rng(5)
    sw = rng.uniform(0.5, 2.0, 4)
    cases = [
        (CategoricalCrossentropy(label_smoothing=0.1), rng.uniform(0.1, 1.0, (4, 3)), np.eye(3)[[0, 1, 2, 1]]),
        (BinaryCrossentropy(label_smoothing=0.2), rng.uniform(0.1, 0.9, (4, 3)), rng.integers(0, 2, (4, 3)) * 1.0),
        (BinaryCrossentropy(from_logits=True), rng.standard_normal((4, 3)), rng.uniform(size=(4, 3))),
        (get_loss("huber"), rng.standard_normal((4, 3)) * 2, rng.standard_normal((4, 3))),
        (get_loss("sigmoid_cross_entropy"), rng.standard_normal((4, 3)), rng.uniform(size=(4, 3))),
    ]
    for loss, out, y in cases:
        _, grad = loss(out, y, sample_weight=sw)
        numeric = np.zeros_like(out)
        for idx in np.ndindex(out.shape):
            up, down = out.copy(), out.copy()
            up[idx] += 1e-6
            down[idx] -= 1e-6
            numeric[idx] = (float(loss(up, y, sw)[0]) - float(loss(down, y, sw)[0])) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=repr(loss))


def test_double_softmax_warning():
    assert "applied twice" in double_softmax_warning("Softmax", get_loss("softmax_cross_entropy"))
    assert "applied twice" in double_softmax_warning("Sigmoid", BinaryCrossentropy(from_logits=True))
    assert "applied twice" in double_softmax_warning("Softmax", CategoricalCrossentropy(from_logits=True))
    assert double_softmax_warning("Softmax", get_loss("categorical_crossentropy")) is None
    assert double_softmax_warning("Sigmoid", get_loss("binary_crossentropy")) is None
    assert double_softmax_warning("Dense", get_loss("softmax_cross_entropy")) is None
    assert double_softmax_warning("Softmax", get_loss("mse")) is None
    # the other way round: Keras's names expect probabilities, a Dense output gives logits
    assert "Add a Softmax() layer" in double_softmax_warning("Dense", get_loss("categorical_crossentropy"))
    assert "from_logits=True" in double_softmax_warning("Dense", get_loss("binary_crossentropy"))


# ---- metrics -----------------------------------------------------------------------------------------
def test_accuracy_resolves_as_keras_does():
    (m,) = resolve_metrics(["accuracy"], get_loss("sigmoid_cross_entropy"), 1)
    assert isinstance(m, BinaryAccuracy) and m.name == "accuracy" and m.threshold == 0.0  # logits: sigmoid > 0.5
    (m,) = resolve_metrics(["accuracy"], get_loss("binary_crossentropy"), 1)
    assert isinstance(m, BinaryAccuracy) and m.threshold == 0.5
    (m,) = resolve_metrics(["acc"], get_loss("mse"), 1)
    assert isinstance(m, BinaryAccuracy)
    (m,) = resolve_metrics(["accuracy"], get_loss("sparse_categorical_crossentropy"), 5)
    assert isinstance(m, SparseCategoricalAccuracy)
    (m,) = resolve_metrics(["accuracy"], get_loss("softmax_cross_entropy"), 5)
    assert isinstance(m, CategoricalAccuracy)
    names = [m.name for m in resolve_metrics(["mae", "top_k_categorical_accuracy"], None, 6)]
    assert names == ["mae", "top_k_categorical_accuracy"]
    with pytest.raises(ValueError, match="Did you mean 'binary_accuracy'"):
        resolve_metrics(["binary_acuracy"], None, 1)
    with pytest.raises(ValueError, match="more than once"):
        resolve_metrics(["mae", "mae"], None, 1)


def test_default_metrics_only_for_multiclass_classification():
    """The bug: Dense(1) + sigmoid xent and mse regressions reported accuracy 1.0."""
    assert [m.name for m in default_metrics(get_loss("softmax_cross_entropy"), 6)] == ["accuracy"]
    assert [m.name for m in default_metrics(get_loss("categorical_crossentropy"), 3)] == ["accuracy"]
    assert default_metrics(get_loss("sigmoid_cross_entropy"), 1) == []
    assert default_metrics(get_loss("binary_crossentropy"), 4) == []
    assert default_metrics(get_loss("mse"), 1) == []
    assert default_metrics(get_loss("mse"), 6) == []


def test_binary_accuracy_on_one_unit_outputs_is_not_always_one(backend):
    out = backend.asarray(np.array([[0.9], [0.2], [0.7], [0.4]]))
    labels = backend.asarray(np.array([[1.0], [1.0], [0.0], [0.0]]))
    metric = resolve_metrics(["accuracy"], get_loss("binary_crossentropy"), 1)[0]
    metric.update(out, labels)
    assert metric.result() == 0.5
    assert CategoricalAccuracy().values(out, labels).all()  # what argmax over one column reports: always right


def test_metric_update_stays_on_the_device(backend):
    metric = CategoricalAccuracy()
    metric.update(backend.asarray(np.eye(3)), backend.asarray(np.eye(3)))
    assert backend.is_array(metric.total) and backend.is_array(metric.count)
    assert metric.result() == 1.0


def test_last_layer_pairs():
    model = Sequential([Dense(3), Softmax()])
    assert double_softmax_warning(model.layers[-1].name, get_loss("softmax_cross_entropy"))
    model = Sequential([Dense(1), Sigmoid()])
    assert double_softmax_warning(model.layers[-1].name, get_loss("binary_crossentropy")) is None
    assert math.isfinite(xpnn.losses.EPSILON)


def test_softmax_cross_entropy_keeps_the_tail_of_a_probability_that_rounds_to_one(backend):
    """TF issue #126634: float64 logits [37.43, 0] with label [1, 0] give TF 2.21 the gradient [0, 5.55e-17]."""
    logits = np.array([[37.42994775023705, 0.0], [0.0, 37.42994775023705], [0.3, -1.2]])
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    _, backprop = backend.kernels.softmax_xent(backend.asarray(logits), backend.asarray(labels))
    backprop = backend.to_host(backprop)
    tail = np.exp(-37.42994775023705)
    np.testing.assert_allclose(backprop[:2], [[-tail, tail], [tail, -tail]], rtol=1e-15)
    exp = np.exp(logits[2] - 0.3)
    assert (backprop[2] == exp / exp.sum() - labels[2]).all()  # elsewhere exactly TF 2.21's softmax − labels


def test_one_unit_output_takes_its_targets_as_values():
    """Dense(1): y of 0/1 ints (n,) or regression values (n,) are the targets, not class indices (as Keras)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((30, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    model = Sequential([Dense(1)], dtype="float64")
    history = model.fit(x, y, epochs=3, loss="sigmoid_cross_entropy", optimizer=xpnn.SGD(0.5), verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    metric = resolve_metrics(["accuracy"], get_loss("sigmoid_cross_entropy"), 1)[0]
    metric.update(model.predict(x), y.reshape(-1, 1).astype(np.float64))
    expected = np.mean((model.predict(x)[:, 0] > 0) == (y == 1))
    assert metric.result() == expected
    regression = Sequential([Dense(1)], dtype="float64")
    regression.fit(x, x[:, 1] * 2.0, epochs=1, loss="mse", optimizer=xpnn.SGD(0.1), verbose=0)
