"""Small numpy multi-layer perceptrons: the parties' representation networks.

Each party maps its own features to a ``d``-dimensional representation with its
own network; weights never leave the party. A network is a stack of hidden
layers (``hidden_layer_sizes``, trained locally) under a linear output layer
``u = W [h; 1]`` that the federated protocol trains. Hidden layers are trained
where the data is, before the federated phase: the source as a classifier of its
own labels, the target as an autoencoder of all of its rows (including the
customers the source never saw). Why only the output layer is trained jointly is
explained in ``docs/transfer.md`` (secure back-propagation through hidden layers
costs one homomorphic operation per row, parameter and output dimension).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATIONS", "Adam", "HiddenStack", "pretrain_autoencoder", "pretrain_classifier"]


def _tanh(z):
    return np.tanh(z)


def _tanh_grad(a):
    return 1.0 - a * a


def _relu(z):
    return np.maximum(z, 0.0)


def _relu_grad(a):
    return (a > 0).astype(a.dtype)


def _logistic(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logistic_grad(a):
    return a * (1.0 - a)


def _identity(z):
    return z


def _identity_grad(a):
    return np.ones_like(a)


#: name -> (function, derivative expressed through the activation's output)
ACTIVATIONS = {
    "tanh": (_tanh, _tanh_grad),
    "relu": (_relu, _relu_grad),
    "logistic": (_logistic, _logistic_grad),
    "identity": (_identity, _identity_grad),
}


class Adam:
    """Adam (Kingma & Ba, 2015) over a list of arrays, updated in place."""

    def __init__(self, params: list[np.ndarray], learning_rate: float):
        self.params = params
        self.learning_rate = learning_rate
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        lr = self.learning_rate * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= lr * m / (np.sqrt(v) + eps)

    def state(self) -> dict:
        """The moments and the step count (a checkpoint keeps them)."""
        return {"m": [m.copy() for m in self.m], "v": [v.copy() for v in self.v], "t": self.t}

    def restore(self, state: dict) -> None:
        """Go back to a :meth:`state`; the moments are overwritten in place."""
        for mine, kept in zip([*self.m, *self.v], [*state["m"], *state["v"]], strict=True):
            mine[...] = kept
        self.t = int(state["t"])


def glorot(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    """Weights ``(n_out, n_in + 1)`` (last column: bias, zero) with Glorot scaling."""
    bound = np.sqrt(6.0 / (n_in + n_out))
    w = rng.uniform(-bound, bound, size=(n_out, n_in + 1))
    w[:, -1] = 0.0
    return w


def with_bias(h: np.ndarray) -> np.ndarray:
    """``[h, 1]``: the output layer's bias is its last weight column."""
    return np.hstack([h, np.ones((h.shape[0], 1))])


class HiddenStack:
    """The hidden layers of a representation network (possibly none).

    Parameters
    ----------
    n_features : int
    hidden_layer_sizes : tuple of int
    activation : str
        One of :data:`ACTIVATIONS`.
    rng : numpy Generator
    """

    def __init__(self, n_features, hidden_layer_sizes, activation, rng):
        sizes = [n_features, *hidden_layer_sizes]
        self.activation = activation
        self.weights = [glorot(rng, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]

    @property
    def n_outputs(self) -> int:
        return self.weights[-1].shape[0] if self.weights else None

    def forward(self, x: np.ndarray, keep: bool = False):
        """Hidden activations; with ``keep`` also every layer's input (for backprop)."""
        act, _ = ACTIVATIONS[self.activation]
        inputs = []
        h = x
        for w in self.weights:
            inputs.append(h)
            h = act(with_bias(h) @ w.T)
        return (h, inputs) if keep else h

    def backward(self, inputs, out, grad_out) -> list[np.ndarray]:
        """Gradients of the hidden weights given ``d loss / d out``."""
        _, dact = ACTIVATIONS[self.activation]
        grads = [None] * len(self.weights)
        delta = grad_out * dact(out)
        for k in range(len(self.weights) - 1, -1, -1):
            grads[k] = delta.T @ with_bias(inputs[k])
            if k:
                delta = (delta @ self.weights[k][:, :-1]) * dact(inputs[k])
        return grads

    def to_dict(self) -> dict:
        return {"activation": self.activation, "weights": [w.tolist() for w in self.weights]}

    @classmethod
    def from_dict(cls, data: dict) -> HiddenStack:
        stack = cls.__new__(cls)
        stack.activation = str(data["activation"])
        stack.weights = [np.asarray(w, dtype=np.float64) for w in data["weights"]]
        return stack


def _train_head(stack, x, target, loss, rng, epochs, learning_rate, alpha, batch_size):
    """Train ``stack`` plus a linear head on ``loss`` ("softmax" or "squared")."""
    n_out = target.shape[1]
    head = glorot(rng, stack.n_outputs, n_out)
    params = [*stack.weights, head]
    opt = Adam(params, learning_rate)
    n = x.shape[0]
    bs = min(batch_size, n)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            h, inputs = stack.forward(x[idx], keep=True)
            z = with_bias(h) @ head.T
            if loss == "softmax":
                z = z - z.max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                dz = (p - target[idx]) / len(idx)
            else:
                dz = (z - target[idx]) / len(idx)
            g_head = dz.T @ with_bias(h) + alpha * np.hstack([head[:, :-1], np.zeros((n_out, 1))])
            grads = stack.backward(inputs, h, dz @ head[:, :-1])
            grads = [
                g + alpha * np.hstack([w[:, :-1], np.zeros((w.shape[0], 1))])
                for g, w in zip(grads, stack.weights, strict=True)
            ]
            opt.step([*grads, g_head])


def pretrain_classifier(stack, x, labels, rng, *, epochs=30, learning_rate=1e-2, alpha=1e-4):
    """Source side: hidden layers learn to separate the source's own classes."""
    if not stack.weights:
        return
    classes, codes = np.unique(labels, return_inverse=True)
    target = np.eye(len(classes))[codes]
    _train_head(stack, x, target, "softmax", rng, epochs, learning_rate, alpha, 256)


def pretrain_autoencoder(stack, x, rng, *, epochs=30, learning_rate=1e-2, alpha=1e-4):
    """Target side: hidden layers learn to reconstruct the target's rows (no labels)."""
    if not stack.weights:
        return
    _train_head(stack, x, x, "squared", rng, epochs, learning_rate, alpha, 256)


class SGD:
    """Plain gradient descent over a list of arrays, updated in place."""

    def __init__(self, params: list[np.ndarray], learning_rate: float):
        self.params = params
        self.learning_rate = learning_rate

    def step(self, grads: list[np.ndarray]) -> None:
        for p, g in zip(self.params, grads, strict=True):
            p -= self.learning_rate * g

    def state(self) -> dict:
        """Nothing: plain gradient descent keeps no state."""
        return {}

    def restore(self, state: dict) -> None:
        """Nothing to restore (:meth:`state`)."""


def make_optimizer(name: str, params: list[np.ndarray], learning_rate: float):
    """``"adam"`` or ``"sgd"`` over ``params``."""
    if name == "adam":
        return Adam(params, float(learning_rate))
    if name == "sgd":
        return SGD(params, float(learning_rate))
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
