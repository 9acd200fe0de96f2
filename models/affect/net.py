"""A small two-head network in numpy (linear when ``hidden == 0``), trained by L-BFGS, deterministic.

Heads: arousal and tension, each a sigmoid. Labels of -1 are masked out of their head's loss
(disgust has no arousal label). Each head's loss is class-balanced binary cross-entropy, so the
decision threshold is 0.5 and nothing is tuned on test data. An ensemble of ``seeds`` networks is
one wider network whose output layer averages the members' logits, so it exports as one graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

CLIP = 5.0
"""Standardized inputs are clipped to +-CLIP (the box does the same)."""


@dataclass(frozen=True)
class NetConfig:
    """Architecture and regularisation of one candidate."""

    hidden: int = 0
    """Hidden units per member (0: logistic regression)."""
    l2: float = 1e-2
    """L2 penalty on the weights (not the biases), per training sample."""
    seeds: int = 1
    """Ensemble members (hidden > 0 only)."""
    max_iter: int = 300


@dataclass
class Net:
    """Trained weights plus the input standardization."""

    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray | None = None
    b2: np.ndarray | None = None

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """Standardized, clipped float32 inputs."""
        return np.clip((x - self.mean) / self.std, -CLIP, CLIP).astype(np.float32)

    def logits_std(self, z: np.ndarray) -> np.ndarray:
        """Logits (n, 2) of standardized inputs, in float64."""
        h = z.astype(np.float64) @ self.w1 + self.b1
        if self.w2 is None:
            return h
        assert self.b2 is not None
        return np.maximum(h, 0.0) @ self.w2 + self.b2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (n, 2) of arousal and tension for raw features."""
        return 1.0 / (1.0 + np.exp(-self.logits_std(self.standardize(x))))


def _sample_weights(y: np.ndarray) -> np.ndarray:
    """Class-balanced weights, 0 for masked labels; each head's weights sum to 1."""
    w = np.zeros(y.shape, dtype=np.float64)
    for j in range(y.shape[1]):
        for c in (0, 1):
            m = y[:, j] == c
            if m.any():
                w[m, j] = 0.5 / m.sum()
    return w


def _fit_member(z: np.ndarray, y: np.ndarray, cfg: NetConfig, seed: int) -> list[np.ndarray]:
    d = z.shape[1]
    sw = _sample_weights(y)
    t = np.where(y > 0, 1.0, 0.0)
    rng = np.random.default_rng(seed)
    if cfg.hidden == 0:
        shapes = [(d, 2), (2,)]
        init = [np.zeros((d, 2)), np.zeros(2)]
    else:
        h = cfg.hidden
        shapes = [(d, h), (h,), (h, 2), (2,)]
        init = [rng.normal(0.0, np.sqrt(2.0 / d), (d, h)), np.zeros(h),
                rng.normal(0.0, np.sqrt(1.0 / h), (h, 2)), np.zeros(2)]
    sizes = [int(np.prod(s)) for s in shapes]
    lam = cfg.l2 / len(z)

    def unpack(theta: np.ndarray) -> list[np.ndarray]:
        out, i = [], 0
        for s, n in zip(shapes, sizes, strict=True):
            out.append(theta[i:i + n].reshape(s))
            i += n
        return out

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = unpack(theta)
        if cfg.hidden == 0:
            logits = z @ p[0] + p[1]
        else:
            pre = z @ p[0] + p[1]
            act = np.maximum(pre, 0.0)
            logits = act @ p[2] + p[3]
        # balanced binary cross-entropy, numerically stable
        loss = float(np.sum(sw * (np.logaddexp(0.0, logits) - t * logits)))
        g_logits = sw * (1.0 / (1.0 + np.exp(-logits)) - t)
        if cfg.hidden == 0:
            grads = [z.T @ g_logits, g_logits.sum(0)]
            loss += 0.5 * lam * float(np.sum(p[0] ** 2))
            grads[0] += lam * p[0]
        else:
            g_act = g_logits @ p[2].T
            g_pre = g_act * (pre > 0)
            grads = [z.T @ g_pre, g_pre.sum(0), act.T @ g_logits, g_logits.sum(0)]
            loss += 0.5 * lam * float(np.sum(p[0] ** 2) + np.sum(p[2] ** 2))
            grads[0] += lam * p[0]
            grads[2] += lam * p[2]
        return loss, np.concatenate([g.ravel() for g in grads])

    theta0 = np.concatenate([a.ravel() for a in init])
    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": cfg.max_iter, "gtol": 1e-9, "ftol": 1e-12})
    return unpack(res.x)


def fit(x: np.ndarray, y: np.ndarray, cfg: NetConfig, seed: int = 0) -> Net:
    """Train a candidate on raw features.

    Args:
        x: features, shape (n, d).
        y: labels (n, 2) for arousal and tension: 1, 0, or -1 (masked).
        cfg: the candidate's configuration.
        seed: base seed of the members' initialisation.

    Returns:
        The trained :class:`Net` (an ensemble is folded into one wider network).
    """
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    z = np.clip((x - mean) / std, -CLIP, CLIP).astype(np.float64)
    if cfg.hidden == 0:
        w, b = _fit_member(z, y, cfg, seed)
        return Net(mean.astype(np.float32), std.astype(np.float32), w, b)
    members = [_fit_member(z, y, cfg, seed + k) for k in range(cfg.seeds)]
    k = len(members)
    w1 = np.concatenate([m[0] for m in members], axis=1)
    b1 = np.concatenate([m[1] for m in members])
    w2 = np.concatenate([m[2] for m in members], axis=0) / k
    b2 = np.mean([m[3] for m in members], axis=0)
    return Net(mean.astype(np.float32), std.astype(np.float32), w1, b1, w2, b2)
