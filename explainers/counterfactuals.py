"""Counterfactuals checked on the black box itself: verify, repair, shrink, sparsify.

A counterfactual method proposes ``x'`` for each row ``x``; only the black box can say whether
``x'`` really gets the target class. ``refine`` takes the proposals of a whole batch and, with
every black-box call batched over the rows still in play (the number of calls is counted and
bounded, never one call per row or per pixel):

1. **verify**: ask the black box about every ``x'`` (after snapping integer features to whole
   numbers in original units, as the views show them);
2. **repair** the rows that do not flip: scale the continuous change up (x1.5 ... x6) along the
   method's own direction, then try every single-category switch of every free categorical
   feature on top of the largest scale, keeping the cheapest that flips;
3. **shrink**: bisect the scale of the continuous change between 0 and the valid proposal;
4. **sparsify**: revert changed features to the input, smallest change first, while the black box
   still gives the target: a bisection over how many of the smallest changes are reverted (a few
   calls even for 784 pixels), then greedy passes that try each remaining feature alone until a
   pass changes nothing (for tabular data every remaining feature is then necessary: reverting
   any one of them loses the flip); for images the passes revert groups of pixels;
5. **shrink** again what is left.

Pinned features never change, continuous features stay inside their bounds, one-hot blocks stay
one-hot, and a candidate is only ever accepted on the black box's word. A row that cannot be
repaired keeps the method's own proposal and is marked ``FAILED``; nothing is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from datasets.base import FeatureSchema

AS_IS, REPAIRED, FAILED = 0, 1, 2
STATUS_NAMES = ("as is", "repaired", "failed")
SCALES = (1.5, 2.0, 3.0, 4.0, 6.0)
SHRINK_STEPS = 8
MAX_CALLS = 64
TOL = 1e-6  # a model-space change below this is no change
IMAGE_GROUPS = 16  # pixel groups per row in the first round of group tests on images
MAX_GROUPS = 64  # candidates per row in one call, at most


class BlackBoxCallError(RuntimeError):
    """The black box failed while counterfactuals were being checked; nothing was changed."""


@dataclass
class Refined:
    """The result of ``refine`` for n rows.

    counterfactuals : (n, d) the verified counterfactual (for a ``FAILED`` row: the proposal).
    predictions : (n,) the black box's class for each of them.
    status : (n,) int8, ``AS_IS`` (the proposal flipped), ``REPAIRED`` or ``FAILED``.
    changed : (n,) number of original features changed (a one-hot block or a pixel counts once).
    calls : batched black-box calls made; rows_asked : rows sent over all calls.
    seconds : wall time of the whole refinement.
    """

    counterfactuals: NDArray[np.float32]
    predictions: NDArray[np.int64]
    status: NDArray[np.int8]
    changed: NDArray[np.int64]
    calls: int
    rows_asked: int
    seconds: float

    @property
    def valid(self) -> NDArray[np.bool_]:
        return self.status != FAILED


class _Oracle:
    """The black box, called on batches, counted and bounded."""

    def __init__(self, predict: Callable[[NDArray], NDArray], max_calls: int) -> None:
        self.predict, self.max_calls = predict, max_calls
        self.calls = self.rows = 0

    @property
    def left(self) -> int:
        return self.max_calls - self.calls

    def __call__(self, X: NDArray) -> NDArray[np.int64]:
        if len(X) == 0:
            return np.zeros(0, dtype=np.int64)
        self.calls += 1
        self.rows += len(X)
        try:
            return np.asarray(self.predict(X), dtype=np.int64)
        except Exception as exc:
            raise BlackBoxCallError(
                f"the black box failed while counterfactuals were checked ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}); the "
                "method's own counterfactuals are unchanged"
            ) from exc


class _Layout:
    """Where each original feature lives in model space, and what may change."""

    def __init__(self, schema: FeatureSchema, pinned: tuple[str, ...]) -> None:
        self.schema = schema
        nc = schema.n_continuous
        self.nc = nc
        self.free_cont = np.array([f.name not in pinned for f in schema.continuous], dtype=bool)
        self.blocks = [(f.block, f.name not in pinned) for f in schema.categorical]
        lo, hi = schema.continuous_bounds()
        self.lo, self.hi = lo.astype(np.float64), hi.astype(np.float64)
        self.integer = np.array([f.integer for f in schema.continuous], dtype=bool)
        self.mean = np.array([f.mean for f in schema.continuous], dtype=np.float64)
        self.std = np.array([f.std for f in schema.continuous], dtype=np.float64)
        self.n_features = nc + len(self.blocks)

    def snap(self, Z: NDArray) -> NDArray[np.float32]:
        """Clip continuous columns to their bounds and round integer features in original units."""
        Z = np.array(Z, dtype=np.float64, copy=True)
        c = Z[:, : self.nc]
        np.clip(c, self.lo, self.hi, out=c)
        if self.integer.any():
            i = self.integer
            c[:, i] = (np.rint(c[:, i] * self.std[i] + self.mean[i]) - self.mean[i]) / self.std[i]
        return Z.astype(np.float32)

    def changes(self, X: NDArray, Z: NDArray) -> NDArray[np.float64]:
        """(n, features): the size of each original feature's change (0: unchanged). A continuous
        feature's size is |change| in model space; a changed categorical block counts as 1."""
        out = np.zeros((len(X), self.n_features))
        out[:, : self.nc] = np.abs(Z[:, : self.nc] - X[:, : self.nc])
        for k, (block, _) in enumerate(self.blocks):
            out[:, self.nc + k] = (np.abs(Z[:, block] - X[:, block]).sum(axis=1) > 0.5) * 1.0
        out[out < TOL] = 0.0
        return out

    def revert(self, X: NDArray, Z: NDArray, mask: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Z with the original features in ``mask`` (n, features) set back to X's values."""
        Z = np.array(Z, copy=True)
        cont = mask[:, : self.nc]
        Z[:, : self.nc] = np.where(cont, X[:, : self.nc], Z[:, : self.nc])
        for k, (block, _) in enumerate(self.blocks):
            rows = mask[:, self.nc + k]
            Z[rows, block] = X[rows, block]
        return Z.astype(np.float32)


def refine(
    predict: Callable[[NDArray], NDArray],
    schema: FeatureSchema,
    X: NDArray,
    proposals: NDArray,
    targets: NDArray,
    *,
    pinned: tuple[str, ...] = (),
    max_calls: int = MAX_CALLS,
    sparsify: bool = True,
) -> Refined:
    """Verify, repair, shrink and sparsify counterfactual ``proposals`` for the rows ``X``.

    Parameters
    ----------
    predict : the black box's class for model-space rows (n, d) -> (n,), called on batches.
    schema : the data set's layout (bounds, integer features, one-hot blocks).
    X, proposals : (n, d) model-space inputs and the method's counterfactuals for them.
    targets : (n,) the class each counterfactual must get.
    pinned : original feature names that may never change.
    max_calls : the most batched black-box calls; stages that would exceed it are skipped.
    sparsify : revert unnecessary features (off: verify, repair and shrink only).

    Raises
    ------
    BlackBoxCallError : the black box failed; the caller keeps the proposals as they are.
    """
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    layout = _Layout(schema, pinned)
    oracle = _Oracle(predict, max_calls)
    # Pinned features are taken from the input whatever the method proposed.
    pin = np.zeros((len(X), layout.n_features), dtype=bool)
    pin[:, : layout.nc] = ~layout.free_cont
    for k, (_, free) in enumerate(layout.blocks):
        pin[:, layout.nc + k] = not free
    proposal = layout.snap(layout.revert(X, np.asarray(proposals, dtype=np.float32), pin))
    best = proposal.copy()
    pred = oracle(best)
    status = np.where(pred == targets, AS_IS, FAILED).astype(np.int8)
    _repair(oracle, layout, X, proposal, targets, best, pred, status)
    ok = status != FAILED
    if ok.any():
        _shrink(oracle, layout, X, best, pred, targets, ok, SHRINK_STEPS)
        if sparsify:
            _sparsify(oracle, layout, X, best, pred, targets, ok)
            _shrink(oracle, layout, X, best, pred, targets, ok, SHRINK_STEPS // 2)
    # Failed rows keep the method's own proposal (its last attempt), as the black box judged it.
    failed = ~ok
    if failed.any():
        best[failed] = proposal[failed]
        pred[failed] = oracle(proposal[failed]) if oracle.left > 0 else pred[failed]
    changed = (layout.changes(X, best) > 0).sum(axis=1).astype(np.int64)
    return Refined(
        best, pred.astype(np.int64), status, changed, oracle.calls, oracle.rows,
        time.perf_counter() - t0,
    )  # fmt: skip


def _repair(
    oracle: _Oracle, layout: _Layout, X: NDArray, proposal: NDArray, targets: NDArray,
    best: NDArray, pred: NDArray, status: NDArray,
) -> None:  # fmt: skip
    """Scale the continuous change up; then single-category switches on top of the largest."""
    nc = layout.nc
    delta = proposal[:, :nc] - X[:, :nc]
    for scale in SCALES:
        rows = np.flatnonzero(status == FAILED)
        rows = rows[np.abs(delta[rows]).sum(axis=1) > TOL]
        if len(rows) == 0 or oracle.left <= 2:
            break
        cand = proposal[rows].copy()
        cand[:, :nc] = X[rows, :nc] + scale * delta[rows]
        cand = layout.snap(cand)
        p = oracle(cand)
        hit = p == targets[rows]
        best[rows[hit]], pred[rows[hit]], status[rows[hit]] = cand[hit], p[hit], REPAIRED
    rows = np.flatnonzero(status == FAILED)
    free_blocks = [block for block, free in layout.blocks if free]
    if len(rows) == 0 or not free_blocks or oracle.left <= 2:
        return
    base = proposal[rows].copy()
    base[:, :nc] = X[rows, :nc] + SCALES[-1] * delta[rows]
    base = layout.snap(base)
    candidates, owner, cost = [], [], []
    for block in free_blocks:
        width = block.stop - block.start
        for c in range(width):
            cand = base.copy()
            cand[:, block] = 0.0
            cand[:, block.start + c] = 1.0
            differs = cand[:, block].argmax(axis=1) != base[:, block].argmax(axis=1)
            candidates.append(cand[differs])
            owner.append(np.flatnonzero(differs))
            cost.append(np.full(int(differs.sum()), 1.0))
    if not candidates:
        return
    cand_all = np.concatenate(candidates)
    own = np.concatenate(owner)
    # cost: changed features plus the continuous L2, so the cheapest switch that flips wins
    changes = layout.changes(X[rows[own]], cand_all)
    score = (changes > 0).sum(axis=1) + np.linalg.norm(changes[:, :nc], axis=1) * 1e-3
    p = oracle(cand_all)
    hit = p == targets[rows[own]]
    for i in np.flatnonzero(hit)[np.argsort(-score[hit])]:  # cheapest written last
        r = rows[own[i]]
        best[r], pred[r], status[r] = cand_all[i], p[i], REPAIRED


def _shrink(
    oracle: _Oracle, layout: _Layout, X: NDArray, best: NDArray, pred: NDArray,
    targets: NDArray, ok: NDArray, steps: int,
) -> None:  # fmt: skip
    """Bisect t in [0, 1] for X + t * (best - X) on the continuous part; keep the smallest valid."""
    nc = layout.nc
    rows = np.flatnonzero(ok)
    rows = rows[np.abs(best[rows, :nc] - X[rows, :nc]).sum(axis=1) > TOL]
    if len(rows) == 0:
        return
    delta = best[rows, :nc] - X[rows, :nc]
    lo, hi = np.zeros(len(rows)), np.ones(len(rows))
    for _ in range(steps):
        if oracle.left <= 1:
            break
        mid = (lo + hi) / 2
        cand = best[rows].copy()
        cand[:, :nc] = X[rows, :nc] + mid[:, None] * delta
        cand = layout.snap(cand)
        p = oracle(cand)
        hit = p == targets[rows]
        hi = np.where(hit, mid, hi)
        lo = np.where(hit, lo, mid)
        best[rows[hit]], pred[rows[hit]] = cand[hit], p[hit]


def _sparsify(
    oracle: _Oracle, layout: _Layout, X: NDArray, best: NDArray, pred: NDArray,
    targets: NDArray, ok: NDArray,
) -> None:  # fmt: skip
    """Revert the smallest changes while the flip holds: a bisection over how many, then passes."""
    rows = np.flatnonzero(ok)
    sizes = layout.changes(X[rows], best[rows])
    n_changed = (sizes > 0).sum(axis=1)
    order = np.argsort(np.where(sizes > 0, sizes, np.inf), axis=1, kind="stable")
    # 1. the largest m in [0, n_changed - 1] such that reverting the m smallest changes holds
    lo, hi = np.zeros(len(rows), dtype=np.int64), np.maximum(n_changed - 1, 0)
    rank = np.argsort(order, axis=1)  # rank of each feature by its size
    while np.any(lo < hi) and oracle.left > 8:
        active = lo < hi
        mid = (lo + hi + 1) // 2
        mask = (rank < mid[:, None]) & (sizes > 0)
        cand = layout.revert(X[rows[active]], best[rows[active]], mask[active])
        p = oracle(cand)
        hit = p == targets[rows[active]]
        idx = np.flatnonzero(active)
        lo[idx[hit]] = mid[idx[hit]]
        hi[idx[~hit]] = mid[idx[~hit]] - 1
        good = idx[hit]
        best[rows[good]], pred[rows[good]] = cand[hit], p[hit]
    # 2. rounds of group tests, every candidate of a round in one call: revert each group of a
    # row's changed features alone (features one by one for tabular data, groups of pixels for
    # images, finer when a round reverts nothing), then every prefix of the groups that could go
    # alone, keeping the longest that holds. At single features, a round that reverts nothing
    # means each remaining feature is necessary.
    groups = (
        min(layout.n_features, MAX_GROUPS) if layout.schema.image_shape is None else IMAGE_GROUPS
    )
    while oracle.left > 3:
        sizes = layout.changes(X[rows], best[rows])
        n_left = (sizes > 0).sum(axis=1)
        live = np.flatnonzero(n_left > 1)
        if len(live) == 0:
            break
        order = np.argsort(np.where(sizes > 0, sizes, np.inf), axis=1, kind="stable")
        g = min(groups, int(n_left[live].max()))
        # group k of row i: its changed features ranked [k * n_i / g, (k + 1) * n_i / g)
        rank = np.argsort(order, axis=1)
        slot = np.where(sizes > 0, (rank * g) // np.maximum(n_left, 1)[:, None], -1)
        cand_rows = np.repeat(live, g)
        cand_group = np.tile(np.arange(g), len(live))
        masks = slot[cand_rows] == cand_group[:, None]
        keep = masks.any(axis=1) & (masks.sum(axis=1) < n_left[cand_rows])
        cand_rows, cand_group, masks = cand_rows[keep], cand_group[keep], masks[keep]
        if len(cand_rows) == 0:
            break
        p = oracle(layout.revert(X[rows[cand_rows]], best[rows[cand_rows]], masks))
        alone = p == targets[rows[cand_rows]]
        # every prefix of each row's revertible groups (in group order: smallest first)
        prefix_rows, prefix_masks = [], []
        for i in np.unique(cand_rows[alone]):
            mine = np.flatnonzero((cand_rows == i) & alone)
            acc = np.zeros(sizes.shape[1], dtype=bool)
            for j in mine:
                acc = acc | masks[j]
                if acc.sum() < n_left[i]:
                    prefix_rows.append(i)
                    prefix_masks.append(acc.copy())
        if not prefix_rows or oracle.left <= 1:
            if groups >= min(layout.n_features, MAX_GROUPS) or g < groups:
                break
            groups = min(groups * 2, MAX_GROUPS)  # nothing could go at this grain: finer groups
            continue
        # next round's grain: about twice as many groups as could not go alone (group testing
        # works best with about one necessary feature per group)
        stuck = np.bincount(cand_rows[~alone], minlength=len(rows))[live]
        groups = max(groups, min(MAX_GROUPS, 2 * int(np.median(stuck)) + 2))
        pr, pm = np.asarray(prefix_rows), np.asarray(prefix_masks)
        cand = layout.revert(X[rows[pr]], best[rows[pr]], pm)
        p = oracle(cand)
        hit = p == targets[rows[pr]]
        # the longest prefix that holds, per row (prefixes of a row come in growing order)
        chosen: dict[int, int] = {}
        for k in np.flatnonzero(hit):
            chosen[int(pr[k])] = int(k)
        if not chosen:
            if groups >= min(layout.n_features, MAX_GROUPS):
                break
            groups = min(groups * 2, MAX_GROUPS)
            continue
        idx = np.fromiter(chosen.values(), dtype=np.int64)
        who = rows[pr[idx]]
        best[who], pred[who] = cand[idx], p[idx]
