"""Adam and SGD against their formulas over several steps; losses against TF's definitions; kernel twins."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnn
from xpnn.optimizers import SGD, Adam


def adam_formula(w, grads, lr, b1, b2, eps):
    """TF's epsilon-hat Adam written out with scalars, step by step."""
    w = w.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        w = w - m * alpha / (np.sqrt(v) + eps)
    return w, m, v


def test_adam_matches_tensorflow_formula(backend):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    opt = Adam(0.009, 0.9, 0.999, 1e-8)
    w = backend.asarray(w0.copy())
    for g in grads:
        opt.apply([w], [backend.asarray(g)])
    expected, m, v = adam_formula(w0, grads, 0.009, 0.9, 0.999, 1e-8)
    np.testing.assert_allclose(backend.to_host(w), expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(backend.to_host(opt.m[0]), m, rtol=1e-14)
    np.testing.assert_allclose(backend.to_host(opt.v[0]), v, rtol=1e-14)
    assert opt.iterations == 5


def test_adam_is_not_the_papers_form():
    """The paper's m̂/(√v̂+ε) differs from TF's in how ε enters; with a large ε the gap is visible."""
    w0, g = np.array([1.0]), np.array([1e-3])
    opt = Adam(0.1, epsilon=1e-2)
    w = w0.copy()
    opt.apply([w], [g])
    paper = w0 - 0.1 * (g / (np.sqrt(g * g) + 1e-2))
    tf_form, _, _ = adam_formula(w0, [g], 0.1, 0.9, 0.999, 1e-2)
    np.testing.assert_allclose(w, tf_form, rtol=1e-15)
    assert abs(w[0] - paper[0]) > 1e-3


def test_sgd_matches_formula(backend):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(3)]
    w = backend.asarray(w0.copy())
    opt = SGD(0.009)
    for g in grads:
        opt.apply([w], [backend.asarray(g)])
    np.testing.assert_allclose(backend.to_host(w), w0 - 0.009 * sum(grads), rtol=1e-14)


def test_float32_adam_stays_float32():
    w = np.ones(4, dtype=np.float32)
    Adam().apply([w], [np.full(4, 0.5, dtype=np.float32)])
    assert w.dtype == np.float32


def test_softmax_cross_entropy_is_tensorflows_definition(backend):
    rng = np.random.default_rng(2)
    logits, y = rng.standard_normal((5, 6)) * 4, rng.standard_normal((5, 6))
    cost, _ = xpnn.get_loss("softmax_cross_entropy")(backend.asarray(logits), backend.asarray(y))
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert float(cost) == pytest.approx(np.mean(-(y * log_softmax).sum(axis=1)), rel=1e-13)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]])
    cost, grad = xpnn.get_loss("softmax_cross_entropy")(logits, np.array([[0.0, 1.0, 0.0]]))
    assert float(cost) == pytest.approx(1000.0)
    assert np.isfinite(grad).all()


def test_sigmoid_cross_entropy_and_mse_definitions():
    rng = np.random.default_rng(3)
    logits, z = rng.standard_normal((4, 3)) * 5, rng.uniform(size=(4, 3))
    cost, _ = xpnn.get_loss("sigmoid_cross_entropy")(logits, z)
    p = 1 / (1 + np.exp(-logits))
    assert float(cost) == pytest.approx(np.mean(-(z * np.log(p) + (1 - z) * np.log(1 - p))), rel=1e-9)
    cost, _ = xpnn.get_loss("mse")(logits, z)
    assert float(cost) == pytest.approx(np.mean((logits - z) ** 2), rel=1e-14)


def test_relu_grad_twin(backend):
    out = backend.asarray(np.array([-1.0, 0.0, 2.0]))
    dout = backend.asarray(np.array([5.0, 6.0, 7.0]))
    assert backend.to_host(backend.kernels.relu_grad(dout, out)).tolist() == [0.0, 0.0, 7.0]
