"""Counterfactuals checked on the black box itself: verify, repair, shrink, sparsify.

A counterfactual method proposes ``x'`` for each row ``x``; only the black box can say whether
``x'`` really gets the target class. ``refine`` takes the proposals of a whole batch and, with
every black-box call batched over the rows still in play (the number of calls is counted and
bounded, never one call per row or per pixel):

1. **verify**: ask the black box about every ``x'`` (after snapping integer features to whole
   numbers in original units, as the views show them);
2. **repair** the rows that do not flip, each step one call for all of them:
   a. scale the continuous change up along the method's own direction (x1.5 ... x6, every scale in
      the same call; the smallest that flips wins);
   b. switch one categorical feature, on top of the proposal and of its largest scale: with a
      ``guide`` (a differentiable surrogate of the black box) only the switches the surrogate
      rates best are asked about, the "next-best categories";
   c. with a ``guide``, a few normalised gradient steps on the surrogate's log-probability of the
      target (projected onto the bounds, pinned features held), every few steps one candidate;
3. **one feature, chosen by a fixed rule** (tabular data, with a ``guide``): every valid row's
   single changes (one category, or one continuous feature moved 1, 2 or 3 standard deviations
   either way) that the surrogate does not rule out are asked about in a fixed order, smallest
   first, ties in the data set's order; the first that holds is the row's counterfactual. Two
   seeds (or methods) whose proposals both reach a single-feature counterfactual thus end on the
   same one (adult, 2,000 rows: two-seed cosine of the verified perturbations 0.69 -> 0.93,
   mean features changed 1.46 -> 1.26);
4. **sparsify** the other rows (without sparsifying: shrink them first, bisecting the scale of
   the continuous change between 0 and the valid counterfactual): revert changed features to
   the input while the black box still gives the target: a bisection over how many of the least
   useful changes are reverted (least useful by the surrogate's first-order estimate
   ``gradient . change`` with a ``guide``, else the smallest change; a few calls even for 784
   pixels), then rounds of group tests that revert each feature (tabular data) or group of
   pixels (images) alone until a round changes nothing (for tabular data every remaining
   feature is then necessary: reverting any one of them loses the flip). On images the pixels
   kept take over the L2 size of the ones reverted (a few pixels changed more instead of
   hundreds changed a little; measured on mnist38: 451 changed pixels -> 31 after the
   bisection, where reverting without it left 273), and the group tests stop after
   ``IMAGE_ROUNDS`` rounds or a round that gains little. Sparsifying before shrinking leaves
   fewer features changed (adult: 1.38 -> 1.25 after the rule of 3) and saves calls;
5. **shrink**: bisect the scale of what is left of the continuous change.

Images with a ``bank`` (``ImageBank``: training images the black box puts in each class, kept
by the method at fit time) start from a source that does not depend on the method at all: each
row's counterfactual first starts on the line from the input to one of its target class's
``BANK_NEAREST`` nearest bank images: t bisected on the black box per line (``BANK_LINE_STEPS``
calls), the line with the smallest change that holds, ``BANK_SLACK`` times that far along it
(``_from_bank``), marked ``FROM_IMAGE``, which then goes through 4 and 5 with its changes ranked
by a fixed weight, ``|change| x |mean target image - mean other image|`` over the bank, ties by
pixel index, in place of the guide's gradient. The method's own proposal stays the raw
counterfactual; where it already flipped the black box and the bank-made one ends larger (L2),
the row starts again within the raw one's size (``_no_larger_than_raw``): from its line's
smallest point that held where that is small enough, else from the proposal (status ``AS_IS``),
made sparse and shrunk in the same fixed order, so no verified counterfactual is larger than a
valid raw one. Why a bank: the sparse result used to
be cut from EMAP's raw perturbation, whose two-seed cosine on mnist38 is 0.71, so no order of
reverting could make two seeds agree (verified cosine 0.48, 0.51 when reverting by size).
Measured on mnist38 (989 test rows, 2 CPU cores, the two bench seeds' EMAPs), every row from the
whole nearest image: verified two-seed cosine 0.481 -> 1.0, validity 1.0, median pixels changed
18 -> 9 (mean 20.6 -> 13.8), median L2 3.68 -> 2.83, 23 -> 21 calls, rows asked per
counterfactual 70 -> 46. But on 8% of the rows whose raw counterfactual flipped, that was
larger in L2 than the raw one; with those rows back on EMAP's own, 77 and 119 rows of the two
seeds carried EMAP's seed noise: cosine 0.927, median pixels 8 (mean 10.7), median L2 2.75, 41
calls. The nearest image is often not the best direction: on those rows the smallest flipping
point on the line to the 2nd nearest has median L2 3.2, to the nearest 5.8. Starting on the best
of 3 lines (5 bisections each, twice the smallest t that held), and taking a row that still ends
larger than its raw one back to its line's smallest point that held where that is no larger,
leaves 17 and 40 rows on EMAP's own: cosine 0.966, median pixels 8 (mean 9.9), median L2 2.61,
47 calls, rows asked per counterfactual 50 -> 63; the Spearman correlation of the verified size
with the black box's margin |p - 0.5| (the uncertainty score's premise) 0.66 -> 0.61 (raw sizes
0.38). Without that way back: 27 and 50 rows, cosine 0.963. Starting right at the smallest t:
cosine 0.959, but median pixels 11 (mean 17.5; tiny test images: 30 of 64 pixels, no room left
to revert any) and Spearman 0.40 (2 nearest images so: 0.954); the whole image of the best
line: cosine 0.953; twice the t after 3 or 4 bisections: 0.955, 0.960.
Ranking by |change| alone instead of the weight gave median 14 pixels and L2 3.65.

Points of at most three continuous features and no categorical ones (moons, blob) skip 3-5: a
**fan search** (``_fan``) finds the nearest point of the target class directly, in fixed
directions around the input and then coordinate by coordinate, whatever the method's direction
was (moons: the median ratio of the verified size to the distance of the black box's nearest
boundary point 1.33 -> 1.19, and two seeds' verified counterfactuals agree more, cosine 0.918 ->
0.975).

Pinned features never change, continuous features stay inside their bounds, one-hot blocks stay
one-hot, and a candidate is only ever accepted on the black box's word. A row whose proposal was
valid never ends with a larger change (L2 in model space) than the proposal (``AS_IS`` by its
cap, a bank-made one by ``_no_larger_than_raw``). A row that cannot be repaired keeps the
method's own proposal and is marked ``FAILED``; nothing is dropped.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from datasets.base import FeatureSchema
from explainers.constraints import Recourse

AS_IS, REPAIRED, FAILED, FROM_IMAGE = 0, 1, 2, 3
STATUS_NAMES = ("as is", "repaired", "failed", "from a training image")
SCALES = (1.5, 2.0, 3.0, 4.0, 6.0)
SHRINK_STEPS = 6  # without sparsifying: the scale to 1/64 of the change
FINAL_SHRINK_STEPS = 4
MAX_CALLS = 64
TOL = 1e-6  # a model-space change below this is no change
INTEGER_SLACK = 1e-3  # original units: float32 rounding of z-scores of whole numbers
IMAGE_GROUPS = 16  # pixel groups per row in the first round of group tests on images
IMAGE_ROUNDS = 3  # rounds of group tests on images, at most
IMAGE_MIN_GAIN = 0.05  # images: stop when a round reverts less than this share of changed pixels
MAX_GROUPS = 64  # candidates per row in one call, at most
GUIDED_SWITCHES = 6  # categorical switches per failed row asked about when a guide ranks them
GUIDE_STEPS = (1, 2, 3, 4, 6, 8, 12, 16)  # surrogate steps after which a candidate is asked about
GUIDE_STEP_SIZE = 0.25  # of the proposal's continuous change (at least GUIDE_MIN_STEP) per step
GUIDE_MIN_STEP = 0.1
GUIDE_STEP_GROWTH = 1.25  # each step 25% longer: 16 steps reach 34x the first step's total
SINGLE_SIZES = (1.0, 2.0, 3.0)  # model-space moves of one continuous feature (shrunk later)
SINGLE_CANDIDATES = 8  # single-feature counterfactuals per row and round asked about
SINGLE_ROUNDS = 3
SINGLE_PLAUSIBLE = 0.02  # the guide's probability of the target below which one is not asked
SINGLE_REACH = 64  # the first single changes of each row's order the guide judges, at most
FAN_DIRECTIONS = 24  # directions around a low-dimensional point (48 for three features)
FAN_STEPS = 6  # radius bisections over the fan of directions
COORD_STEPS = 6  # then per coordinate
LIMIT_POOL = 5  # max_changed: the most useful changes a kept subset is chosen from
LIMIT_SCALES = (1.5, 2.0, 3.0)  # ... and the scales of its continuous part
LIMIT_CANDIDATES = 8  # per row asked in one call
BANK_NEAREST = 3  # images: the nearest bank images of the target class a row may start from
BANK_LINE_STEPS = 5  # ... each moved t of the way, t bisected on the black box this many times
BANK_SLACK = (
    2.0  # ... and the row starts twice as far as the smallest t that held (room to sparsify)
)


class BlackBoxCallError(RuntimeError):
    """The black box failed while counterfactuals were being checked; nothing was changed."""


class Guide(Protocol):
    """A differentiable stand-in for the black box (a surrogate) that ranks candidates before the
    black box judges them; it never decides validity."""

    def log_target(self, Z: NDArray, targets: NDArray) -> NDArray[np.float64]:
        """(m, d) model-space rows, (m,) classes -> (m,) log-probability of each row's class."""
        ...

    def gradient(self, Z: NDArray, targets: NDArray) -> NDArray[np.float64]:
        """(m, d), (m,) -> (m, d) gradient of ``log_target`` with respect to the rows."""
        ...


class TorchGuide:
    """A ``Guide`` from a torch classifier with ``logits`` (``explainers.models.TorchModel``), e.g.
    EMAP's surrogate; rows are evaluated in batches of ``batch`` on the model's device."""

    def __init__(self, model: Any, batch: int = 8192) -> None:
        self.model, self.batch = model, batch

    def _log_probs(self, Z: NDArray, targets: NDArray, grad: bool) -> tuple[Any, Any]:
        import torch

        z = torch.as_tensor(np.asarray(Z, dtype=np.float32), device=self.model.device)
        if grad:
            z.requires_grad_(True)
        t = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=z.device)
        logp = torch.log_softmax(self.model.logits(z), dim=1)
        return z, logp[torch.arange(len(t), device=z.device), t]

    def log_target(self, Z: NDArray, targets: NDArray) -> NDArray[np.float64]:
        import torch

        out = []
        with torch.no_grad():
            for s in range(0, len(Z), self.batch):
                _, lp = self._log_probs(Z[s : s + self.batch], targets[s : s + self.batch], False)
                out.append(lp.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def gradient(self, Z: NDArray, targets: NDArray) -> NDArray[np.float64]:
        import torch

        out = []
        with torch.enable_grad():
            for s in range(0, len(Z), self.batch):
                z, lp = self._log_probs(Z[s : s + self.batch], targets[s : s + self.batch], True)
                (g,) = torch.autograd.grad(lp.sum(), z)
                out.append(g.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, np.shape(Z)[1]))


@dataclass
class Refined:
    """The result of ``refine`` for n rows.

    counterfactuals : (n, d) the verified counterfactual (for a ``FAILED`` row: the proposal).
    predictions : (n,) the black box's class for each of them.
    status : (n,) int8, ``AS_IS`` (the proposal flipped), ``REPAIRED``, ``FAILED`` or
        ``FROM_IMAGE`` (images: made from one of the nearest bank images of the target class,
        not from the proposal).
    changed : (n,) number of original features changed (a one-hot block or a pixel counts once).
    calls : batched black-box calls made; rows_asked : rows sent over all calls.
    seconds : wall time of the whole refinement.
    reasons : (n,) why each ``FAILED`` row failed ("" for the others).
    """

    counterfactuals: NDArray[np.float32]
    predictions: NDArray[np.int64]
    status: NDArray[np.int8]
    changed: NDArray[np.int64]
    calls: int
    rows_asked: int
    seconds: float
    reasons: NDArray[np.str_] | None = None

    @property
    def valid(self) -> NDArray[np.bool_]:
        return self.status != FAILED

    def result_fields(
        self, proposals: NDArray, proposal_predictions: NDArray, targets: NDArray
    ) -> dict[str, NDArray]:
        """The counterfactual fields of an ``explainers.base.Result`` (and so of the
        ``Explanation``): the verified counterfactuals as ``counterfactuals`` (``success`` and
        ``counterfactual_predictions`` describe them), the method's own as
        ``raw_counterfactuals`` with the black box's classes for them, and the status per row.
        A method that verifies its proposals builds its ``Result`` with these."""
        return {
            "counterfactuals": self.counterfactuals,
            "counterfactual_predictions": self.predictions,
            # a row failed for a constraint may reach its target on a counterfactual not shown
            "success": self.valid & (self.predictions == np.asarray(targets)),
            "raw_counterfactuals": np.asarray(proposals, dtype=np.float32),
            "raw_counterfactual_predictions": np.asarray(proposal_predictions, dtype=np.int64),
            "counterfactual_status": self.status,
        }

    def metrics(self) -> dict[str, float | None]:
        """Run-level figures: validity (share of verified counterfactuals that get their target),
        the refinement's black-box calls, rows asked and seconds."""
        n = len(self.status)
        return {
            "validity": float(self.valid.mean()) if n else None,
            "verify_blackbox_calls": float(self.calls),
            "verify_rows_asked": float(self.rows_asked),
            "verify_seconds": self.seconds,
        }


@dataclass(frozen=True)
class ImageBank:
    """Training images the black box puts in each class, kept by a method at fit time: the source
    of image counterfactuals that do not depend on the method's seed (``refine``'s ``bank``).

    images : (m, d) model-space rows; classes : (m,) the black box's class for each.
    """

    images: NDArray[np.float32]
    classes: NDArray[np.int64]

    @classmethod
    def from_training(cls, X: NDArray, classes: NDArray, per_class: int = 0) -> ImageBank:
        """The bank of a training split ``X`` with the black box's ``classes``: every image, or with
        ``per_class`` at most that many per class, evenly spaced in the split's order (never drawn
        at random: two fits with different seeds keep the same bank)."""
        X = np.asarray(X, dtype=np.float32)
        classes = np.asarray(classes, dtype=np.int64)
        keep = []
        for c in np.unique(classes):
            idx = np.flatnonzero(classes == c)
            if per_class and len(idx) > per_class:
                idx = idx[np.linspace(0, len(idx) - 1, per_class).round().astype(np.int64)]
            keep.append(idx)
        idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
        return cls(X[idx], classes[idx])

    def packed(self) -> dict[str, NDArray]:
        """The arrays to save: images as 8-bit levels (``images_u8``, a quarter of the bytes) when
        they are exactly k / 255 in float32, as 8-bit pixels in [0, 1] are, else as they are."""
        levels = np.round(self.images.astype(np.float64) * 255.0)
        if levels.min(initial=0) >= 0 and levels.max(initial=0) <= 255:
            u8 = levels.astype(np.uint8)
            if np.array_equal(u8.astype(np.float32) / np.float32(255), self.images):
                return {"images_u8": u8, "classes": self.classes}
        return {"images": self.images, "classes": self.classes}

    @classmethod
    def unpacked(cls, arrays: dict[str, NDArray]) -> ImageBank:
        """The bank ``packed`` saved (the same float32 images)."""
        if "images_u8" in arrays:
            images = np.asarray(arrays["images_u8"]).astype(np.float32) / np.float32(255)
        else:
            images = np.asarray(arrays["images"], dtype=np.float32)
        return cls(images, np.asarray(arrays["classes"], dtype=np.int64))

    def nearest(
        self, X: NDArray, targets: NDArray, k: int = 1
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """Per row of ``X``, the indices (n, k) of the ``k`` nearest bank images (L2, nearest first,
        ties: the lower index) of its target class, and whether the bank holds one (a class with
        fewer than ``k`` repeats its farthest). The quality card's
        proximity baseline (``explainers.quality.nearest_real_examples``) asks the same of its
        own pool; this one stays in float32 with a fixed tie rule, since the result must not move
        between fits."""
        X = np.asarray(X, dtype=np.float32)
        out = np.zeros((len(X), k), dtype=np.int64)
        found = np.zeros(len(X), dtype=bool)
        for c in np.unique(targets):
            rows = np.flatnonzero(targets == c)
            pool = np.flatnonzero(self.classes == c)
            if len(pool) == 0:
                continue
            B = self.images[pool]
            # ||x - b||^2 less ||x||^2, which does not change the order within a row
            d2 = np.einsum("ij,ij->i", B, B, dtype=np.float64)[None, :] - 2.0 * (X[rows] @ B.T)
            order = np.argsort(d2, axis=1, kind="stable")[:, :k]
            out[rows] = pool[order[:, np.minimum(np.arange(k), order.shape[1] - 1)]]
            found[rows] = True
        return out, found

    def weights(self, targets: NDArray) -> NDArray[np.float64]:
        """(classes, d), one row per class up to the largest of ``targets``: how much each column
        separates that class from the others in the bank, |mean of its images - mean of the rest|
        (0 where a side is empty). A row's weights are ``table[its target]``."""
        rows = int(np.max(targets, initial=-1)) + 1
        table = self._separation
        out = np.zeros((rows, table.shape[1]))
        out[: min(rows, len(table))] = table[:rows]
        return out

    @functools.cached_property
    def _separation(self) -> NDArray[np.float64]:
        """``weights`` for every class up to the bank's largest, once per bank (every chunk and
        option of a fit asks for it; a 10-class bank of 10,240 images copies 300 MB to make it)."""
        out = np.zeros((int(self.classes.max(initial=-1)) + 1, self.images.shape[1]))
        for c in np.unique(self.classes):
            mine = self.classes == c
            if (~mine).any():
                out[c] = np.abs(
                    self.images[mine].mean(axis=0, dtype=np.float64)
                    - self.images[~mine].mean(axis=0, dtype=np.float64)
                )
        return out


class _Oracle:
    """The black box, called on batches, counted and bounded."""

    def __init__(
        self,
        predict: Callable[[NDArray], NDArray],
        max_calls: int,
        check: Callable[[], None] | None,
    ) -> None:
        self.predict, self.max_calls, self.check = predict, max_calls, check
        self.calls = self.rows = 0

    @property
    def left(self) -> int:
        return self.max_calls - self.calls

    def __call__(self, X: NDArray) -> NDArray[np.int64]:
        if len(X) == 0:
            return np.zeros(0, dtype=np.int64)
        if self.check is not None:
            self.check()
        self.calls += 1
        self.rows += len(X)
        try:
            out = np.asarray(self.predict(X), dtype=np.int64)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise BlackBoxCallError(
                f"the black box failed while counterfactuals were checked ({type(exc).__name__}: "
                f"{first}); the method's own counterfactuals are unchanged. Check that the model "
                "answers predictions (its server is up, its input format unchanged) and run the "
                "explanation again"
            ) from exc
        if out.shape != (len(X),):
            raise BlackBoxCallError(
                f"the black box returned {out.shape} classes for {len(X)} rows while "
                "counterfactuals were checked; the method's own counterfactuals are unchanged. "
                "The model must return one class per row: check its predict and run again"
            )
        return out


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
        self.lo32, self.hi32 = lo.astype(np.float32), hi.astype(np.float32)
        self.integer = np.array([f.integer for f in schema.continuous], dtype=bool)
        self.mean = np.array([f.mean for f in schema.continuous], dtype=np.float64)
        self.std = np.array([f.std for f in schema.continuous], dtype=np.float64)
        self.n_features = nc + len(self.blocks)
        self.owner = schema.column_owner()
        self.image = schema.image_shape is not None

    def snap(self, X: NDArray, Z: NDArray) -> NDArray[np.float32]:
        """Clip continuous columns of ``Z`` to their bounds and make integer features change by
        whole numbers in original units, rounding the change towards the input ``X`` (rows of
        ``X`` match rows of ``Z``): snapping never makes a change larger. Returns a new array."""
        Z = np.array(Z, dtype=np.float32, copy=True)
        self._snap_columns(np.asarray(X)[:, : self.nc], Z[:, : self.nc], slice(0, self.nc))
        return Z

    def moved(self, X: NDArray, j: int, step: float) -> NDArray[np.float32]:
        """(n,) column ``j`` of ``snap(X, X + step * e_j)``: continuous feature ``j`` of every row
        moved by ``step`` (model space) and snapped, without building the other columns (the
        single-feature stage sizes every move of every feature before it builds any)."""
        c = np.asarray(X[:, j : j + 1], dtype=np.float32) + step
        self._snap_columns(X[:, j : j + 1], c, slice(j, j + 1))
        return c[:, 0]

    def _snap_columns(self, x: NDArray, c: NDArray[np.float32], cols: slice) -> None:
        """``snap`` of the continuous columns ``cols``: ``c`` (changed in place) against the
        input's ``x``, both (n, width of cols)."""
        np.clip(c, self.lo32[cols], self.hi32[cols], out=c)
        i = self.integer[cols]
        if i.any():
            std = self.std[cols][i]
            x = np.asarray(x, dtype=np.float64)[:, i]
            change = (c[:, i].astype(np.float64) - x) * std  # original units
            # whole units towards the input (a float32 hair below a whole unit counts as whole)
            whole = np.trunc(change + np.sign(change) * INTEGER_SLACK)
            c[:, i] = x + whole / std

    def changes(self, X: NDArray, Z: NDArray) -> NDArray[np.float64]:
        """(n, features): the size of each original feature's change (0: unchanged). A continuous
        feature's size is |change| in model space; a changed categorical block counts as 1."""
        out = np.zeros((len(X), self.n_features))
        out[:, : self.nc] = np.abs(Z[:, : self.nc] - X[:, : self.nc])
        for k, (block, _) in enumerate(self.blocks):
            out[:, self.nc + k] = (np.abs(Z[:, block] - X[:, block]).sum(axis=1) > 0.5) * 1.0
        out[out < TOL] = 0.0
        return out

    def per_feature(self, columns: NDArray) -> NDArray[np.float64]:
        """(n, d) model-space column values summed per original feature -> (n, features)."""
        out = np.zeros((len(columns), self.n_features))
        np.add.at(out.T, self.owner, np.asarray(columns, dtype=np.float64).T)
        return out

    def revert(self, X: NDArray, Z: NDArray, mask: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Z with the original features in ``mask`` (n, features) set back to X's values (a new
        float32 array)."""
        Z = np.array(Z, dtype=np.float32, copy=True)
        np.copyto(Z[:, : self.nc], X[:, : self.nc], where=mask[:, : self.nc])
        for k, (block, _) in enumerate(self.blocks):
            rows = mask[:, self.nc + k]
            Z[rows, block] = X[rows, block]
        return Z


class _State:
    """What every stage reads and updates: the rows, the best counterfactual so far and its class,
    each row's status, and the size a row whose proposal was valid may not exceed."""

    def __init__(
        self, oracle: _Oracle, layout: _Layout, guide: Guide | None, X: NDArray,
        proposal: NDArray, targets: NDArray, recourse: Recourse | None = None,
        frozen: NDArray | None = None,
    ) -> None:  # fmt: skip
        self.oracle, self.layout, self.guide = oracle, layout, guide
        self.recourse, self.frozen = recourse, frozen
        self.X, self.proposal, self.targets = X, proposal, targets
        self.best = proposal.copy()
        self.pred = oracle(self.best)
        self.pred0 = self.pred.copy()
        self.status = np.where(self.pred == targets, AS_IS, FAILED).astype(np.int8)
        # An as-is row may not grow: its cap is the proposal's size; a repaired row has none.
        self.cap = np.where(
            self.status == AS_IS, np.linalg.norm(proposal - X, axis=1) + 1e-5, np.inf
        )
        # (classes, features) a fixed, seed-independent usefulness weight per feature of each
        # target class (``ImageBank.weights``); None: the guide's
        self.weight: NDArray[np.float64] | None = None
        # images from a bank: per row the nearest point of its bank line that held, which the
        # black box puts in the target class (``_from_bank``; the proposal where there is none)
        self.line: NDArray[np.float32] | None = None

    def ask(self, rows: NDArray, cand: NDArray) -> NDArray[np.bool_]:
        """The black box on candidates for ``rows`` (one call); True where the target is reached.
        The classes it gave stay in ``last`` until the next call. With constraints, ``cand`` is
        first projected onto what they allow, in place: every stage's candidates keep them, and
        the caller accepts the projected rows it was answered about."""
        if self.recourse is not None and len(cand):
            frozen = None if self.frozen is None else self.frozen[rows]
            cand[...] = self.recourse.project(self.X[rows], cand, frozen)
        self.last = self.oracle(cand)
        return self.last == self.targets[rows]

    def accept(self, rows: NDArray, cand: NDArray, hit: NDArray, pred: NDArray) -> None:
        """Keep the candidates that reached the target and respect their row's cap; ``pred``:
        the black box's classes for ``cand``."""
        keep = hit & (np.linalg.norm(cand - self.X[rows], axis=1) <= self.cap[rows])
        self.best[rows[keep]] = cand[keep]
        self.pred[rows[keep]] = pred[keep]


class SingleMemo:
    """The single-feature stage's findings about n rows, kept across ``refine`` calls on the same
    rows, targets, guide, schema and pinned features (EMAP's options of one explanation): per
    (row, single change) the guide's verdict and the black box's (1 plausible / holds, 0 ruled
    out / misses, -1 not asked). Every option goes down the same fixed order of single changes,
    so a later one re-asks what an earlier one asked unless it is kept here.

    Two int8 arrays of n x (single changes per row), allocated at first use: about 75 MB for
    250,000 rows of 150 single changes each."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.verdict: NDArray[np.int8] | None = None
        self.answer: NDArray[np.int8] | None = None
        self._lock = threading.Lock()  # chunks of disjoint rows may be refined in two threads

    def tables(self, width: int) -> tuple[NDArray[np.int8], NDArray[np.int8]]:
        """The verdict and answer tables, (n, width) each (``width`` single changes per row)."""
        with self._lock:
            if self.verdict is None or self.answer is None:
                self.verdict = np.full((self.n, width), -1, dtype=np.int8)
                self.answer = np.full((self.n, width), -1, dtype=np.int8)
        assert self.verdict.shape[1] == width, "a memo serves one schema and one set of pins"
        return self.verdict, self.answer


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
    guide: Guide | None = None,
    check: Callable[[], None] | None = None,
    recourse: Recourse | None = None,
    frozen: NDArray[np.bool_] | None = None,
    memo: SingleMemo | None = None,
    memo_rows: NDArray[np.int64] | None = None,
    bank: ImageBank | None = None,
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
    guide : a surrogate of the black box (``TorchGuide``) that ranks candidates and gives the
        gradient steps; without it, repairs are scaling and every single switch, and changes are
        reverted smallest first.
    check : called before every black-box call (a method's cancel check); what it raises passes.
    recourse : the user's constraints (``explainers.constraints``): every candidate is projected
        onto them before the black box is asked, a row that still changes more than
        ``max_changed`` features keeps only its most useful ones or fails, and each final
        counterfactual is checked exactly (a row that breaks one is marked ``FAILED`` with the
        reason, never valid).
    frozen : (n, features) original features each row may not change beyond ``pinned`` (the
        features earlier options used, for diverse counterfactuals).
    memo, memo_rows : what earlier calls on the same rows, targets and guide learnt in the
        single-feature stage (``SingleMemo``), and the memo's row of each row of ``X``: the guide
        is not asked again about a change it judged, nor (without ``recourse``) the black box
        about a change it answered. EMAP's further options share the first one's.
    bank : images only (with ``sparsify``): training images per class; each row starts on the
        line to one of the nearest ones of its target class instead of from the proposal
        (``FROM_IMAGE``, ``_from_bank``), and changes are
        reverted in a fixed order (the module docstring says why and what it measured); a row
        whose proposal flipped and whose bank-made one ends larger goes back to its line's
        smallest point that held where that is no larger than the proposal, else to the proposal
        (``_no_larger_than_raw``).

    Raises
    ------
    BlackBoxCallError : the black box failed; the caller keeps the proposals as they are.
    """
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    if recourse is not None:
        pinned = tuple(dict.fromkeys((*pinned, *recourse.immutable)))
    layout = _Layout(schema, pinned)
    oracle = _Oracle(predict, max_calls, check)
    # Pinned features are taken from the input whatever the method proposed.
    pin = np.zeros((len(X), layout.n_features), dtype=bool)
    pin[:, : layout.nc] = ~layout.free_cont
    for k, (_, free) in enumerate(layout.blocks):
        pin[:, layout.nc + k] = not free
    if frozen is not None:
        pin |= np.asarray(frozen, dtype=bool)
    proposal = layout.snap(X, layout.revert(X, np.asarray(proposals, dtype=np.float32), pin))
    if recourse is not None:
        proposal = recourse.project(X, proposal, frozen)
    st = _State(oracle, layout, guide, X, proposal, targets, recourse, frozen)
    if bank is not None and layout.image and sparsify:
        _from_bank(st, bank, pin)
    _repair(st)
    ok = st.status != FAILED
    if ok.any():
        # rows are made sparse before they are shrunk: on images the pixels kept take over the
        # size of the ones reverted (the more size, the fewer pixels it needs), and on tables a
        # change not yet shrunk to its own boundary lets more of the other features go
        if _low_dimensional(layout):
            _fan(st, ok)
        else:
            rest = ok
            if sparsify and guide is not None and not layout.image:
                rest = ok & ~_single_feature(st, ok, memo, memo_rows)
            if not sparsify:
                _shrink(st, rest, SHRINK_STEPS)
            if sparsify:
                _sparsify(st, rest)
            _shrink(st, ok, FINAL_SHRINK_STEPS)
            if st.line is not None:  # the bank made these rows (``_from_bank``)
                _no_larger_than_raw(st)
    reasons = np.where(
        st.status == FAILED,
        "no change the black box accepted"
        + (
            " within the constraints"
            if recourse is not None or frozen is not None or pinned
            else ""
        ),
        "",
    ).astype(np.str_)
    if recourse is not None:
        if recourse.max_changed and ok.any():
            _limit_changes(st, ok, recourse.max_changed)
        broken = recourse.violations(X, st.best)
        bad = (st.status != FAILED) & (broken != "")
        reasons = reasons.astype(object)
        reasons[bad] = broken[bad]
        reasons = reasons.astype(np.str_)
        st.status[bad] = FAILED
    # Failed rows keep the method's own proposal (its last attempt), as the black box judged it.
    failed = st.status == FAILED
    st.best[failed], st.pred[failed] = st.proposal[failed], st.pred0[failed]
    changed = (layout.changes(X, st.best) > 0).sum(axis=1).astype(np.int64)
    return Refined(
        st.best, st.pred.astype(np.int64), st.status, changed, oracle.calls, oracle.rows,
        time.perf_counter() - t0, reasons,
    )  # fmt: skip


def _limit_changes(st: _State, ok: NDArray, most: int) -> None:
    """Rows that still change more than ``most`` features: candidates that keep ``most`` of their
    ``LIMIT_POOL`` most useful changes (by the guide's estimate, else the largest) and revert the
    rest, each with its continuous part as is and scaled up by ``LIMIT_SCALES`` (what the
    reverted features did must now come from the kept ones); ranked by the guide (its flips,
    smallest first), the best ``LIMIT_CANDIDATES`` per row asked in one call, the smallest that
    holds kept. A row none holds for is left for the exact check to fail."""
    layout, X, nc = st.layout, st.X, st.layout.nc
    sizes = layout.changes(X, st.best)
    rows = np.flatnonzero(ok & ((sizes > 0).sum(axis=1) > most))
    if len(rows) == 0 or st.oracle.left < 1:
        return
    sizes = sizes[rows]
    use = np.where(sizes > 0, _usefulness(st, rows, sizes), -np.inf)
    order = np.argsort(-use, axis=1, kind="stable")[:, :LIMIT_POOL]  # most useful first
    pool = min(LIMIT_POOL, order.shape[1])
    cands, owners = [], []
    for keep in itertools.combinations(range(pool), min(most, pool)):
        revert = sizes > 0
        for c in keep:
            revert[np.arange(len(rows)), order[:, c]] = False
        base = layout.revert(X[rows], st.best[rows], revert)
        for scale in (1.0, *LIMIT_SCALES):
            cand = base.copy()
            cand[:, :nc] = X[rows, :nc] + scale * (base[:, :nc] - X[rows, :nc])
            cands.append(layout.snap(X[rows], cand))
            owners.append(np.arange(len(rows)))
    found = _smallest_that_holds(
        st, rows, np.concatenate(owners), np.concatenate(cands), LIMIT_CANDIDATES
    )
    if found is None:
        return
    first, cand, own, _ = found
    # the cap of an as-is row does not apply: a counterfactual within the limit beats none
    st.best[rows[own[first]]] = cand[first]
    st.pred[rows[own[first]]] = st.last[first]


def _smallest_that_holds(
    st: _State, rows: NDArray, own: NDArray, cand: NDArray, limit: int
) -> tuple[NDArray, NDArray, NDArray, NDArray] | None:
    """Candidates ``cand`` for rows ``rows[own]``, ranked by the guide (those it puts in the
    target class first, smallest first; by size alone without a guide), the best ``limit`` per
    row asked in one call. Returns ``(first, cand, own, hit)`` over the asked candidates, where
    ``first`` indexes, per row, the smallest one the black box holds; None when none holds."""
    X = st.X
    cost = np.linalg.norm(cand - X[rows[own]], axis=1)
    if st.guide is not None:
        logp = st.guide.log_target(cand, st.targets[rows[own]])
        key = np.where(logp > np.log(0.5), cost, 1e6 - logp)
    else:
        key = cost
    keep = _top_per_row(own, key, limit)
    cand, own, cost = cand[keep], own[keep], cost[keep]
    hit = st.ask(rows[own], cand)
    if not hit.any():
        return None
    k = np.flatnonzero(hit)
    r = rows[own[k]]
    order = np.lexsort((cost[k], r))
    first = k[order][np.r_[True, r[order][1:] != r[order][:-1]]]
    return first, cand, own, hit


# --------------------------------------------------------------------------- repair
def _repair(st: _State) -> None:
    """Scale the continuous change up; switch one category; with a guide, surrogate steps."""
    layout, X, proposal, nc = st.layout, st.X, st.proposal, st.layout.nc
    delta = proposal[:, :nc] - X[:, :nc]
    rows = np.flatnonzero(st.status == FAILED)
    rows = rows[np.abs(delta[rows]).sum(axis=1) > TOL]
    if len(rows) and st.oracle.left > 2:
        cands = []
        for scale in SCALES:
            cand = proposal[rows].copy()
            cand[:, :nc] = X[rows, :nc] + scale * delta[rows]
            cands.append(layout.snap(X[rows], cand))
        _repaired_by_first_that_holds(st, rows, cands)
    _repair_categories(st, delta)
    if st.guide is not None:
        _repair_by_steps(st)


def _from_bank(st: _State, bank: ImageBank, pin: NDArray[np.bool_]) -> None:
    """Images: every row's counterfactual starts on the line from the input to one of the
    ``BANK_NEAREST`` nearest bank images of its target class (pinned pixels kept as they are).
    Along each line, t in x + t (image - x) is bisected on the black box (``BANK_LINE_STEPS``
    calls, every line of every row in each; a line that can no longer beat the row's best is
    dropped); the line whose smallest t that holds gives the smallest change wins (ties: the
    nearer image), and the row starts ``BANK_SLACK`` times as far along it (at most the image
    itself; one more call, kept where it holds). The nearest image is often not the best
    direction, and a start right at the boundary would leave the sparsification no room to
    revert pixels (the module docstring has the figures). The rows it holds for take it (status
    ``FROM_IMAGE``; no cap, since it replaces the method's proposal instead of shrinking it).
    From then on every row's changes are ranked by the bank's fixed weight, not the guide's
    gradient, so that what is reverted does not depend on the method's seed either."""
    k = BANK_NEAREST
    idx, found = bank.nearest(st.X, st.targets, k)
    rows = np.flatnonzero(found)
    if len(rows) == 0 or st.oracle.left < 3 + BANK_LINE_STEPS:
        return
    layout, n = st.layout, len(rows)
    own = np.tile(rows, k)  # image j of row i at j * n + i
    Xo = st.X[own]
    images = bank.images[idx[rows].T.ravel()]
    far = layout.snap(Xo, layout.revert(Xo, images, pin[own]))
    hit = st.ask(own, far)  # with constraints, the lines end where they allow
    best = far.copy()  # per line, the smallest change that held
    lo, hi = np.zeros(len(own)), np.ones(len(own))
    # per line, the size of the smallest change that holds so far and of the largest that did
    # not: a snapped point's change grows with t, so no t below lo can do better than ``floor``
    size = np.where(hit, np.linalg.norm(far - Xo, axis=1), np.inf)
    floor = np.zeros(len(own))
    for _ in range(BANK_LINE_STEPS):
        reach = np.tile(size.reshape(k, n).min(axis=0), k)
        live = np.flatnonzero(np.isfinite(size) & (floor < reach))
        if len(live) == 0:
            break
        mid = (lo[live] + hi[live]) / 2
        cand = layout.snap(Xo[live], Xo[live] + mid[:, None] * (far[live] - Xo[live]))
        h = st.ask(own[live], cand)
        norm = np.linalg.norm(cand - Xo[live], axis=1)
        hi[live[h]], lo[live[~h]] = mid[h], mid[~h]
        size[live[h]], floor[live[~h]] = norm[h], norm[~h]
        best[live[h]] = cand[h]
    size = size.reshape(k, n)
    pick = size.argmin(axis=0)  # the first (nearer image) among equals
    at = pick * n + np.arange(n)
    ok = np.isfinite(size[pick, np.arange(n)])
    rows, at = rows[ok], at[ok]
    X = st.X[rows]
    # the start: BANK_SLACK times as far as the smallest t that held, else that point itself
    t = np.minimum(1.0, BANK_SLACK * hi[at])
    cand = layout.snap(X, X + t[:, None] * (far[at] - X))
    h = st.ask(rows, cand)
    st.best[rows] = np.where(h[:, None], cand, best[at])
    st.pred[rows] = st.targets[rows]  # either point held
    st.line = st.best.copy()
    st.line[rows] = best[at]
    st.status[rows] = FROM_IMAGE
    st.cap[rows] = np.inf
    st.weight = bank.weights(st.targets)


def _no_larger_than_raw(st: _State) -> None:
    """Rows whose own proposal already flipped the black box but whose counterfactual made from a
    bank image ended larger (L2) than that proposal start again, capped at the proposal's size:
    from the nearest point of their bank line that held (``_from_bank``) where that is no larger
    than the proposal (still ``FROM_IMAGE``: it does not depend on the method), else from the
    proposal (status ``AS_IS``); all are made sparse and shrunk together, in the bank's fixed
    order, so that no verified counterfactual is larger than the method's valid one."""
    raw = np.linalg.norm(st.proposal - st.X, axis=1)
    larger = (
        (st.pred0 == st.targets)
        & (st.status == FROM_IMAGE)
        & (np.linalg.norm(st.best - st.X, axis=1) > raw + 1e-5)
    )
    if not larger.any() or st.line is None:
        return
    line = larger & (np.linalg.norm(st.line - st.X, axis=1) <= raw + 1e-5)
    st.best[line], st.pred[line] = st.line[line], st.targets[line]
    own = larger & ~line
    st.best[own], st.pred[own] = st.proposal[own], st.pred0[own]
    st.status[own] = AS_IS
    st.cap[larger] = raw[larger] + 1e-5
    _sparsify(st, larger)
    _shrink(st, larger, FINAL_SHRINK_STEPS)


def _switches(
    layout: _Layout, bases: NDArray, owners: NDArray
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Every single-category switch of every free block on top of each base row: the candidate
    rows and, for each, the index into ``owners`` of the row it belongs to."""
    cands, own = [], []
    for block, free in layout.blocks:
        if not free:
            continue
        current = bases[:, block].argmax(axis=1)
        for c in range(block.stop - block.start):
            differs = np.flatnonzero(current != c)
            cand = bases[differs].copy()
            cand[:, block] = 0.0
            cand[:, block.start + c] = 1.0
            cands.append(cand)
            own.append(owners[differs])
    if not cands:
        return np.zeros((0, bases.shape[1]), np.float32), np.zeros(0, np.int64)
    return np.concatenate(cands).astype(np.float32), np.concatenate(own)


def _top_per_row(owner: NDArray, key: NDArray, k: int) -> NDArray[np.int64]:
    """Indices of the ``k`` smallest ``key`` values of each owner (candidates ranked per row)."""
    order = np.lexsort((key, owner))
    sorted_owner = owner[order]
    starts = np.r_[0, np.flatnonzero(sorted_owner[1:] != sorted_owner[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return np.sort(order[rank < k])


def _cheapest(st: _State, rows: NDArray, own: NDArray, cand: NDArray, hit: NDArray) -> None:
    """Per row, of its candidates that hit, the one with the fewest changed features (then the
    smallest L2) becomes its counterfactual (status ``REPAIRED``)."""
    if not hit.any():
        return
    idx = np.flatnonzero(hit)
    r = rows[own[idx]]
    changed = (st.layout.changes(st.X[r], cand[idx]) > 0).sum(axis=1)
    l2 = np.linalg.norm(cand[idx] - st.X[r], axis=1)
    order = np.lexsort((l2, changed, r))
    first = order[np.r_[True, r[order][1:] != r[order][:-1]]]
    who = r[first]
    st.best[who] = cand[idx[first]]
    st.pred[who] = st.last[idx[first]]
    st.status[who] = REPAIRED


def _repair_categories(st: _State, delta: NDArray) -> None:
    """One categorical switch on top of the proposal and of its largest scale; with a guide only
    the switches the surrogate rates most likely to reach the target, else all of them."""
    layout, X, nc = st.layout, st.X, st.layout.nc
    rows = np.flatnonzero(st.status == FAILED)
    if len(rows) == 0 or not any(free for _, free in layout.blocks) or st.oracle.left <= 2:
        return
    big = st.proposal[rows].copy()
    big[:, :nc] = X[rows, :nc] + SCALES[-1] * delta[rows]
    bases = np.concatenate([st.proposal[rows], layout.snap(X[rows], big)])
    owners = np.tile(np.arange(len(rows)), 2)
    cand, own = _switches(layout, bases, owners)
    if len(cand) == 0:
        return
    if st.guide is not None:
        score = -st.guide.log_target(cand, st.targets[rows[own]])
        keep = _top_per_row(own, score, GUIDED_SWITCHES)
    else:
        cost = np.linalg.norm(cand - X[rows[own]], axis=1)
        keep = _top_per_row(own, cost, MAX_GROUPS)
    cand, own = cand[keep], own[keep]
    hit = st.ask(rows[own], cand)
    _cheapest(st, rows, own, cand, hit)


def _repair_by_steps(st: _State) -> None:
    """Normalised gradient ascent on the surrogate's log-probability of the target from the
    proposal (continuous features only: free, inside their bounds), in steps that grow
    geometrically, so that one call covers changes from a fraction of the proposal's to many times
    it; the black box is asked about the iterate after each of ``GUIDE_STEPS`` steps, in one call,
    and the earliest that flips wins.
    Rows without free continuous features are left as they are."""
    assert st.guide is not None
    layout, X, nc = st.layout, st.X, st.layout.nc
    rows = np.flatnonzero(st.status == FAILED)
    if len(rows) == 0 or nc == 0 or not layout.free_cont.any() or st.oracle.left <= 2:
        return
    z = st.proposal[rows].astype(np.float64)
    t = st.targets[rows]
    size = np.linalg.norm(z[:, :nc] - X[rows, :nc], axis=1)
    step = GUIDE_STEP_SIZE * np.maximum(size, GUIDE_MIN_STEP * np.sqrt(layout.free_cont.sum()))
    free = layout.free_cont.astype(np.float64)
    cands = []
    for i in range(1, GUIDE_STEPS[-1] + 1):
        g = st.guide.gradient(z.astype(np.float32), t)[:, :nc] * free
        norm = np.linalg.norm(g, axis=1, keepdims=True)
        z[:, :nc] += (
            (step * GUIDE_STEP_GROWTH ** (i - 1))[:, None] * g / np.where(norm > 0, norm, 1)
        )
        z = layout.snap(X[rows], z).astype(np.float64)
        if i in GUIDE_STEPS:
            cands.append(z.astype(np.float32))
    _repaired_by_first_that_holds(st, rows, cands)


def _repaired_by_first_that_holds(st: _State, rows: NDArray, cands: list[NDArray]) -> None:
    """Ask every candidate list (one candidate per row of ``rows`` each) in one call; a row takes
    the first list's candidate that holds on the black box and is marked repaired."""
    stacked = np.concatenate(cands)
    hit = st.ask(np.tile(rows, len(cands)), stacked).reshape(len(cands), len(rows))
    first = np.where(hit.any(axis=0), hit.argmax(axis=0), -1)
    for s in range(len(cands)):
        mine = first == s
        if mine.any():
            idx = s * len(rows) + np.flatnonzero(mine)
            st.best[rows[mine]] = stacked[idx]
            st.pred[rows[mine]] = st.last[idx]
            st.status[rows[mine]] = REPAIRED


# --------------------------------------------------------------------------- shrink
def _shrink(st: _State, ok: NDArray, steps: int) -> None:
    """Bisect t in [0, 1] for X + t * (best - X) on the continuous part; keep the smallest valid."""
    layout, X, nc = st.layout, st.X, st.layout.nc
    rows = np.flatnonzero(ok)
    rows = rows[np.abs(st.best[rows, :nc] - X[rows, :nc]).sum(axis=1) > TOL]
    if len(rows) == 0:
        return
    delta = st.best[rows, :nc] - X[rows, :nc]
    lo, hi = np.zeros(len(rows)), np.ones(len(rows))
    for _ in range(steps):
        if st.oracle.left <= 1:
            break
        mid = (lo + hi) / 2
        cand = st.best[rows].copy()
        cand[:, :nc] = X[rows, :nc] + mid[:, None] * delta
        cand = layout.snap(X[rows], cand)
        hit = st.ask(rows, cand)
        hi = np.where(hit, mid, hi)
        lo = np.where(hit, lo, mid)
        st.accept(rows, cand, hit, st.last)


# --------------------------------------------------------------------------- sparsify
def _usefulness(st: _State, rows: NDArray, sizes: NDArray) -> NDArray[np.float64]:
    """(rows, features): how much each changed feature helps, to revert the least useful first.
    With a guide: the first-order drop of the surrogate's log-probability of the target were the
    feature reverted, ``gradient . change`` summed over its columns; else the change's size.
    Images started from a bank: the change's size times the bank's fixed weight (``_from_bank``),
    whatever the guide says."""
    if st.weight is not None:
        return sizes * st.weight[st.targets[rows]]
    if st.guide is None:
        return sizes
    Z = st.best[rows]
    g = st.guide.gradient(Z, st.targets[rows])
    return st.layout.per_feature(g * (Z - st.X[rows]))


def _sparsify(st: _State, ok: NDArray) -> None:
    """Revert the least useful changes while the flip holds: a bisection over how many, then
    rounds of group tests."""
    layout, X = st.layout, st.X
    rows = np.flatnonzero(ok)
    sizes = layout.changes(X[rows], st.best[rows])
    n_changed = (sizes > 0).sum(axis=1)
    use = np.where(sizes > 0, _usefulness(st, rows, sizes), np.inf)
    rank = np.argsort(np.argsort(use, axis=1, kind="stable"), axis=1)
    # 1. the largest m in [0, n_changed - 1] such that reverting the m least useful changes holds;
    # on images the pixels kept take over the size of the change reverted (same L2, clipped to
    # [0, 1]): a few pixels changed more instead of many changed a little
    lo, hi = np.zeros(len(rows), dtype=np.int64), np.maximum(n_changed - 1, 0)
    budget = np.linalg.norm(st.best[rows] - X[rows], axis=1)
    while np.any(lo < hi) and st.oracle.left > 8:
        active = np.flatnonzero(lo < hi)
        mid = (lo + hi + 1) // 2
        mask = (rank < mid[:, None]) & (sizes > 0)
        cand = layout.revert(X[rows[active]], st.best[rows[active]], mask[active])
        if layout.image:
            cand = _concentrate(layout, X[rows[active]], cand, budget[active])
        hit = st.ask(rows[active], cand)
        lo[active[hit]] = mid[active[hit]]
        hi[active[~hit]] = mid[active[~hit]] - 1
        st.accept(rows[active], cand, hit, st.last)
    _group_tests(st, rows)


def _concentrate(layout: _Layout, X: NDArray, Z: NDArray, size: NDArray) -> NDArray[np.float32]:
    """``Z`` (changed in place and returned) with its change from ``X`` scaled to L2 ``size`` per
    row, clipped to the bounds (which can only make it smaller)."""
    nc = layout.nc
    delta = Z[:, :nc] - X[:, :nc]
    norm = np.sqrt(np.einsum("ij,ij->i", delta, delta))
    scale = np.where(norm > TOL, size / np.maximum(norm, TOL), 1.0).astype(np.float32)
    delta *= scale[:, None]
    delta += X[:, :nc]
    np.clip(delta, layout.lo32, layout.hi32, out=delta)
    Z[:, :nc] = delta
    return layout.snap(X, Z) if layout.integer.any() else Z


def _group_tests(st: _State, rows: NDArray) -> None:
    """Rounds of group tests, every candidate of a round in one call: revert each group of a row's
    changed features alone (features one by one for tabular data, groups of pixels for images,
    finer when a round reverts nothing), then prefixes of the groups that could go alone (every
    prefix for tabular data, a few lengths for images), keeping the longest that holds (the
    shortest, one group, is known to hold from its own test and costs no call). A row is tested
    again only when the last round changed it (or the grain did): at single features, a round
    that reverts nothing of a row means each of its remaining features is necessary. Images stop
    after ``IMAGE_ROUNDS`` rounds or when a round reverts under ``IMAGE_MIN_GAIN`` of the changed
    pixels: the last rounds cost the most black-box rows for the fewest pixels."""
    layout, X = st.layout, st.X
    finest = min(layout.n_features, MAX_GROUPS)
    groups = IMAGE_GROUPS if layout.image else finest
    retest = np.ones(len(rows), dtype=bool)
    rounds = 0
    while st.oracle.left > 3 and (not layout.image or rounds < IMAGE_ROUNDS):
        rounds += 1
        sizes = layout.changes(X[rows], st.best[rows])
        budget = np.linalg.norm(st.best[rows] - X[rows], axis=1)
        n_left = (sizes > 0).sum(axis=1)
        live = np.flatnonzero((n_left > 1) & retest)
        if len(live) == 0:
            break
        use = np.where(sizes > 0, _usefulness(st, rows, sizes), np.inf)
        order = np.argsort(use, axis=1, kind="stable")
        g = min(groups, int(n_left[live].max()))
        # group k of row i: its changed features ranked [k * n_i / g, (k + 1) * n_i / g) by
        # usefulness, least useful first
        rank = np.argsort(order, axis=1)
        slot = np.where(sizes > 0, (rank * g) // np.maximum(n_left, 1)[:, None], -1)
        cand_rows = np.repeat(live, g)
        cand_group = np.tile(np.arange(g), len(live))
        masks = slot[cand_rows] == cand_group[:, None]
        keep = masks.any(axis=1) & (masks.sum(axis=1) < n_left[cand_rows])
        cand_rows, cand_group, masks = cand_rows[keep], cand_group[keep], masks[keep]
        if len(cand_rows) == 0:
            break
        cand = layout.revert(X[rows[cand_rows]], st.best[rows[cand_rows]], masks)
        if layout.image:
            cand = _concentrate(layout, X[rows[cand_rows]], cand, budget[cand_rows])
        alone = st.ask(rows[cand_rows], cand)
        del masks
        # each row's first group that can go alone (candidates come in row, then group, order)
        hits = np.flatnonzero(alone)
        first_alone = (
            hits[np.r_[True, cand_rows[hits][1:] != cand_rows[hits][:-1]]] if len(hits) else hits
        )
        first_cand, first_pred = cand[first_alone], st.last[first_alone]
        del cand
        # prefixes of two or more of each row's revertible groups, in group order
        ok_group = np.zeros((len(rows), g), dtype=bool)
        ok_group[cand_rows[alone], cand_group[alone]] = True
        count = ok_group.sum(axis=1)
        group_rank = np.where(ok_group, np.cumsum(ok_group, axis=1), 0)
        feature_rank = np.where(
            slot >= 0, np.take_along_axis(group_rank, np.maximum(slot, 0), axis=1), 0
        )
        pr, length = _prefix_lengths(count, layout.image)
        longer = length >= 2
        pr, length = pr[longer], length[longer]
        pm = (feature_rank[pr] >= 1) & (feature_rank[pr] <= length[:, None])
        fits = pm.sum(axis=1) < n_left[pr]
        pr, pm = pr[fits], pm[fits]
        if len(first_alone) == 0:
            if groups >= finest or g < groups:
                break
            groups = min(groups * 2, MAX_GROUPS)  # nothing could go at this grain: finer groups
            retest[:] = True
            continue
        # next round's grain: about twice as many groups as could not go alone (group testing
        # works best with about one necessary feature per group)
        stuck = np.bincount(cand_rows[~alone], minlength=len(rows))[live]
        grain = max(groups, min(MAX_GROUPS, 2 * int(np.median(stuck)) + 2))
        retest[:] = grain != groups
        groups = grain
        before = st.best[rows].copy()
        # one group alone holds: take it; then the longest longer prefix that holds, if any
        st.accept(rows[cand_rows[first_alone]], first_cand, np.ones(len(first_alone), bool),
                  first_pred)  # fmt: skip
        if len(pr) and st.oracle.left > 1:
            cand = layout.revert(X[rows[pr]], before[pr], pm)
            if layout.image:
                cand = _concentrate(layout, X[rows[pr]], cand, budget[pr])
            hit = st.ask(rows[pr], cand)
            if hit.any():
                k = np.flatnonzero(hit)
                last = k[np.r_[pr[k][1:] != pr[k][:-1], True]]
                st.accept(rows[pr[last]], cand[last], hit[last], st.last[last])
        changed = np.any(st.best[rows] != before, axis=1)
        retest |= changed
        if layout.image:
            gain = (layout.changes(X[rows], before) > 0).sum() - (
                layout.changes(X[rows], st.best[rows]) > 0
            ).sum()
            if gain < IMAGE_MIN_GAIN * max(1, n_left[live].sum()):
                break


def _prefix_lengths(count: NDArray, few: bool) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For rows with ``count`` revertible groups each: (row, prefix length) pairs, each row's in
    growing order: every length 1..count, or with ``few`` a handful (count, 3/4, 1/2, 1/4, 1/8
    of it)."""
    pr, length = [], []
    for r in np.flatnonzero(count):
        c = int(count[r])
        if few:
            lengths = sorted({max(1, int(np.ceil(c * f))) for f in (0.125, 0.25, 0.5, 0.75, 1.0)})
        else:
            lengths = list(range(1, c + 1))
        pr += [r] * len(lengths)
        length += lengths
    return np.asarray(pr, dtype=np.int64), np.asarray(length, dtype=np.int64)


def _directions(free: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Unit directions in the space of the free continuous features (zero on pinned ones): every
    ``FAN_DIRECTIONS``-th of a circle for two, a Fibonacci sphere for three, both signs for one."""
    k = int(free.sum())
    if k == 1:
        base = np.array([[1.0], [-1.0]])
    elif k == 2:
        a = np.arange(FAN_DIRECTIONS) * 2 * np.pi / FAN_DIRECTIONS
        base = np.column_stack([np.cos(a), np.sin(a)])
    else:
        m = 2 * FAN_DIRECTIONS
        z = 1 - (np.arange(m) + 0.5) * 2 / m
        phi = np.arange(m) * np.pi * (3 - np.sqrt(5))
        rad = np.sqrt(1 - z**2)
        base = np.column_stack([rad * np.cos(phi), rad * np.sin(phi), z])
    out = np.zeros((len(base), len(free)))
    out[:, free] = base
    return out


def _low_dimensional(layout: _Layout) -> bool:
    """Points of one to three free continuous features and no categorical ones (moons, blob): the
    fan search (``_fan``) finds their nearest boundary point directly."""
    return not layout.image and not layout.blocks and 1 <= int(layout.free_cont.sum()) <= 3


def _fan(st: _State, ok: NDArray) -> None:
    """Low-dimensional points: the nearest point the black box puts in the target class, searched
    around the input in a fan of fixed directions (every ``360 / FAN_DIRECTIONS`` degrees in two
    dimensions, a Fibonacci sphere in three) that depends neither on the method nor on its seed,
    then refined coordinate by coordinate. No guide is needed.

    1. ``FAN_STEPS`` bisections of the radius between 0 and the current counterfactual's size
       rounded up to a power of two (two runs whose sizes round alike ask the same radii):
       at each radius every direction of the fan within 90 degrees of the current change is asked
       about (one call for all rows); where any holds, the radius shrinks and the holding direction
       closest to the mean of the holding ones (the middle of the arc that crosses into the
       target class) is kept, else the radius grows.
    2. ``COORD_STEPS`` bisections per coordinate, side by side: a forest's target region is a
       union of boxes, whose nearest point is the input clipped to the box, so each coordinate
       moves towards the input as far as the flip holds. Each step is one call with every
       coordinate moved alone and all moved together; all together is kept where it holds, else
       the smallest single move that holds.

    On moons (2,000 test rows, both seeds' EMAPs) this replaced surrogate-ranked turns at
    fractions of the size: minimality ratio median 1.331 -> 1.193, two-seed cosine of the
    verified perturbations 0.918 -> 0.975 (0.943 with radii from each run's own size), 20 -> 15
    calls; the fan alone gave 1.26 (72 directions: 1.17 for three times the rows)."""
    layout, X, nc = st.layout, st.X, st.layout.nc
    dirs = _directions(layout.free_cont)
    change = st.best[:, :nc] - X[:, :nc]
    size = np.linalg.norm(change, axis=1)
    rows = np.flatnonzero(ok & (size > TOL))
    if len(rows) == 0:
        return
    ahead = change[rows] @ dirs.T > 0  # (rows, directions)
    # radii on a fixed dyadic grid (the size rounded up to a power of two): two runs whose sizes
    # round alike ask the same radii, so they end on the same point
    lo, hi = np.zeros(len(rows)), 2.0 ** np.ceil(np.log2(size[rows]))
    r_idx, d_idx = np.nonzero(ahead)
    for _ in range(FAN_STEPS):
        if st.oracle.left <= COORD_STEPS + 1:
            break
        mid = (lo + hi) / 2
        cand = st.best[rows[r_idx]].copy()
        cand[:, :nc] = X[rows[r_idx], :nc] + mid[r_idx, None] * dirs[d_idx]
        cand = layout.snap(X[rows[r_idx]], cand)
        hit = st.ask(rows[r_idx], cand)
        held = np.zeros(ahead.shape, dtype=bool)
        held[r_idx, d_idx] = hit
        where = np.full(ahead.shape, -1)
        where[r_idx, d_idx] = np.arange(len(r_idx))
        score = np.where(held, (held.astype(np.float64) @ dirs) @ dirs.T, -np.inf)
        pick = score.argmax(axis=1)
        some = held.any(axis=1)
        k = where[np.flatnonzero(some), pick[some]]
        st.accept(rows[some], cand[k], hit[k], st.last[k])
        hi[some] = mid[some]
        lo[~some] = mid[~some]
    # a forest's target region is a union of boxes, whose nearest point is the input clipped to
    # the box: every coordinate moves towards the input as far as the flip holds, by bisections
    # side by side, each step one call with each coordinate moved alone and all moved together
    free = np.flatnonzero(layout.free_cont)
    k, m = len(free), len(rows)
    start = st.best[rows][:, free] - X[rows][:, free]  # t = 1: the change before the bisections
    lo_c, hi_c = np.zeros((m, k)), np.ones((m, k))
    for _ in range(COORD_STEPS):
        if st.oracle.left <= 1:
            return
        mid = (lo_c + hi_c) / 2
        t = np.repeat(hi_c[None], k + 1, axis=0)  # (candidate kind, row, coordinate)
        for j in range(k):
            t[j, :, j] = mid[:, j]  # kind j: coordinate j alone; kind k: all together
        t[k] = mid
        cand = np.repeat(st.best[rows][None], k + 1, axis=0)
        cand[:, :, free] = X[rows][:, free][None] + t * start[None]
        cand = layout.snap(np.tile(X[rows], (k + 1, 1)), cand.reshape(-1, X.shape[1]))
        hit = st.ask(np.tile(rows, k + 1), cand).reshape(k + 1, m)
        size = np.linalg.norm(cand - np.tile(X[rows], (k + 1, 1)), axis=1).reshape(k + 1, m)
        single = np.where(hit[:k], size[:k], np.inf)
        j_best, has_single = single.argmin(axis=0), np.isfinite(single).any(axis=0)
        choice = np.where(hit[k], k, np.where(has_single, j_best, -1))
        moved = hit[k][:, None] | (
            (has_single & ~hit[k])[:, None] & (np.arange(k)[None] == j_best[:, None])
        )
        got = np.flatnonzero(choice >= 0)
        idx = choice[got] * m + got
        st.accept(rows[got], cand[idx], np.ones(len(got), dtype=bool), st.last[idx])
        hi_c = np.where(moved, mid, hi_c)
        lo_c = np.where(~moved & ~hit[:k].T, mid, lo_c)


def _single_feature(
    st: _State, ok: NDArray, memo: SingleMemo | None = None, memo_rows: NDArray | None = None
) -> NDArray[np.bool_]:
    """A counterfactual of one feature for every valid row that has one, chosen by a rule that does
    not depend on the method or its seed, before any shrinking or sparsifying.

    Of all single changes (one category of a free block, or one free continuous feature moved by
    ``SINGLE_SIZES`` either way, within an as-is row's cap), those the guide does not rule out
    (probability of the target at least ``SINGLE_PLAUSIBLE``) are asked about in a fixed order:
    smallest model-space change first, ties in the data set's order of features and categories.
    Rounds of ``SINGLE_CANDIDATES`` per row, one call each, go down that order for the rows
    without a hit yet (at most ``SINGLE_ROUNDS``); the first that holds becomes the row's
    counterfactual (a continuous move is shrunk later). Only the first ``SINGLE_REACH`` changes
    of a row's order are judged: on wide tables the guide rules out most changes, and a row
    without a hit would otherwise have its whole order judged (the 1M-row table of issue 19,
    about 95-135 allowed changes per row, 3,000 rows, one option: the guide judged 84 changes
    per row; with the reach 54, the job process's CPU 1.08 -> 0.78 s, validity 1.0 either way,
    features changed 1.021 -> 1.057 on average). Adult has at most 48 single changes per row,
    so its counterfactuals do not depend on the reach.

    Two seeds' sparsified counterfactuals were often different, equally valid single switches
    (adult, 2,000 rows: two-seed cosine of the verified perturbations 0.70); with this order they
    are the same wherever both guides leave the first valid one in.

    The order needs only each change's size, so the changes are sized without being built
    (``_single_changes``), and the guide judges them lazily, down each row's order, only as far
    as the next round needs: a row settled in the first round never has its other changes
    judged. The counterfactuals are the same as when every change is built and judged. On the
    1M-row table of issue 19 (20 numeric and 3 text columns, about 110 allowed single changes
    per row; 8,192 rows explained with 3 options, cProfile on a CPU clock) the stage took 13.2
    of the job process's 16.8 CPU s that way, and 7.2 of 10.5 sized and judged lazily.

    Returns the rows settled this way (the caller does not sparsify them)."""
    assert st.guide is not None
    settled = np.zeros(len(st.X), dtype=bool)
    rows = np.flatnonzero(ok)
    if len(rows) == 0 or st.oracle.left <= FINAL_SHRINK_STEPS + 2:
        return settled
    changes = _single_changes(st, rows)
    # each row's changes in the fixed order (a stable sort: ties keep the order made); those not
    # allowed (inf) come last and are never reached
    order = np.argsort(changes.cost, axis=1, kind="stable")
    n_allowed = np.isfinite(changes.cost).sum(axis=1)
    reach = np.minimum(n_allowed, SINGLE_REACH)  # the positions the guide may judge
    m, width = order.shape
    # per kind of change: the guide's verdict (1 plausible, 0 ruled out, -1 not asked) and the
    # black box's answer (1 holds, 0 misses, -1 not asked), from earlier calls where memoised
    verdict = np.full((m, width), -1, dtype=np.int8)
    answer = verdict.copy()
    at_memo = None
    if memo is not None and width:
        at_memo = (np.arange(len(st.X)) if memo_rows is None else np.asarray(memo_rows))[rows]
        memo_verdict, memo_answer = memo.tables(width)
        verdict[:] = memo_verdict[at_memo]
        if st.recourse is None:  # with constraints a change is asked as they project it
            answer[:] = memo_answer[at_memo]
    verdict = np.take_along_axis(verdict, order, axis=1)  # by position in each row's order
    answer = np.take_along_axis(answer, order, axis=1)
    judged = np.zeros(m, dtype=np.int64)  # the first position each row's guide has not judged
    n_plausible = np.zeros(m, dtype=np.int64)
    found = np.zeros(m, dtype=bool)
    for r in range(SINGLE_ROUNDS):
        if st.oracle.left <= FINAL_SHRINK_STEPS + 2:
            break
        need = (r + 1) * SINGLE_CANDIDATES
        while True:  # the guide judges the next positions until each row has this round's
            live = np.flatnonzero(~found & (n_plausible < need) & (judged < reach))
            if len(live) == 0:
                break
            span = np.minimum(need - n_plausible[live], reach[live] - judged[live])
            owner = np.repeat(live, span)
            at = judged[owner] + np.arange(len(owner)) - np.repeat(np.cumsum(span) - span, span)
            new = verdict[owner, at] < 0
            if new.any():
                o, a = owner[new], at[new]
                logp = st.guide.log_target(changes.build(o, order[o, a]), st.targets[rows[o]])
                verdict[o, a] = logp >= np.log(SINGLE_PLAUSIBLE)
            n_plausible += np.bincount(owner, weights=verdict[owner, at] == 1, minlength=m).astype(
                np.int64
            )
            judged[live] += span
        # the plausible ones' ranks, in order (a memo also knows changes this row may not make)
        plausible = (verdict == 1) & (np.arange(width) < reach[:, None])
        rank = np.cumsum(plausible, axis=1) - 1
        pick = plausible & (rank >= r * SINGLE_CANDIDATES) & (rank < need) & ~found[:, None]
        owner, at = np.nonzero(pick)  # row-major: each row's candidates in order
        if len(owner) == 0:
            break
        asked = changes.build(owner, order[owner, at])
        new = answer[owner, at] < 0
        hit = answer[owner, at] == 1
        if new.all():  # projected by the constraints (in place): what the black box judged
            hit = st.ask(rows[owner], asked)
        elif new.any():  # answers are memoised only without constraints: nothing is projected
            hit[new] = st.ask(rows[owner[new]], asked[new])
        answer[owner, at] = hit
        if not hit.any():
            continue
        k = np.flatnonzero(hit)  # in order within each row: the first hit of a row is its choice
        first = k[np.r_[True, owner[k][1:] != owner[k][:-1]]]
        who = rows[owner[first]]
        st.best[who] = asked[first]
        st.pred[who] = st.targets[who]  # a hit: the black box gave the target
        found[owner[first]] = True
    if at_memo is not None:
        back = np.argsort(order, axis=1)  # each row's order inverted
        memo_verdict[at_memo] = np.take_along_axis(verdict, back, axis=1)
        if st.recourse is None:
            memo_answer[at_memo] = np.take_along_axis(answer, back, axis=1)
    settled[rows[found]] = True
    return settled


@dataclass
class _SingleChanges:
    """Every single change of m rows, sized but not built: column k of ``cost`` (m, K) is the
    k-th kind of change (each free continuous feature moved by each of ``SINGLE_SIZES`` up, then
    down; then each category of each free block), its model-space L2 size rounded to 4 decimals,
    inf where the row may not make it (no real change, a pinned or frozen feature, over an as-is
    row's cap). ``build`` makes the candidate rows of (row, kind) pairs."""

    X: NDArray[np.float32]  # (m, d) the rows
    base: NDArray[np.float32]  # (m, d) the rows snapped: a move keeps the rest of its row so
    moved: NDArray[np.float32]  # (m, continuous kinds) the moved feature's new value
    column: NDArray[np.int64]  # (K,) the column a kind sets (the category's for a switch)
    blocks: list[slice]  # the free one-hot blocks
    block_of: NDArray[np.int64]  # (switch kinds,) the index in ``blocks`` of a switch's block
    cost: NDArray[np.float32]

    def build(self, owner: NDArray, kind: NDArray) -> NDArray[np.float32]:
        """(len(owner), d): the change ``kind[i]`` made to row ``owner[i]``."""
        nk = self.moved.shape[1]
        move = kind < nk
        cand = np.where(move[:, None], self.base[owner], self.X[owner])
        cand[move, self.column[kind[move]]] = self.moved[owner[move], kind[move]]
        switch = np.flatnonzero(~move)
        block_of = self.block_of[kind[switch] - nk]
        for b in np.unique(block_of):
            mine = switch[block_of == b]
            cand[mine, self.blocks[b]] = 0.0
            cand[mine, self.column[kind[mine]]] = 1.0
        return cand


def _single_changes(st: _State, rows: NDArray) -> _SingleChanges:
    """The single changes of ``rows`` (see ``_SingleChanges``), sized column by column: a move
    changes one column of the snapped row (``snap`` of the rest of the row only clips what was
    already out of bounds), a switch one block of the row."""
    layout = st.layout
    X = st.X[rows]
    m, nc = len(rows), layout.nc
    base = layout.snap(X, X)
    # what snapping alone changes (out-of-bounds values clipped): counted with each move's own
    off = np.abs(base[:, :nc] - X[:, :nc]).astype(np.float64) >= TOL
    off_sq = np.where(off, (base[:, :nc] - X[:, :nc]) ** 2, 0).astype(np.float32)
    frozen = None if st.frozen is None else st.frozen[rows]
    cap = st.cap[rows]
    costs, columns, moved = [], [], []
    off_all, off_sq_all = off.sum(axis=1), off_sq.sum(axis=1)
    off_frozen = None if frozen is None else (off & frozen[:, :nc]).sum(axis=1)
    for j in np.flatnonzero(layout.free_cont):
        # snapping's changes to the other columns stay in every move of this one
        others = off_all - off[:, j]
        others_sq = off_sq_all - off_sq[:, j]
        others_frozen = np.zeros(m, dtype=bool)
        if off_frozen is not None and frozen is not None:
            others_frozen = off_frozen > (off[:, j] & frozen[:, j])
        for size in SINGLE_SIZES:
            for sign in (1.0, -1.0):
                v = layout.moved(X, int(j), sign * size)
                d = v - X[:, j]
                real = np.abs(d).astype(np.float64) >= TOL
                cost = np.sqrt(d * d + others_sq)
                allowed = (real.astype(int) + others == 1) & (cost <= cap) & ~others_frozen
                if frozen is not None:
                    allowed &= ~(real & frozen[:, j])
                costs.append(np.where(allowed, np.round(cost, 4), np.inf))
                columns.append(j)
                moved.append(v)
    blocks: list[slice] = []
    block_of = []
    for k, (block, free) in enumerate(layout.blocks):
        if not free:
            continue
        blocks.append(block)
        current = X[:, block].argmax(axis=1)
        for c in range(block.stop - block.start):
            diff = -X[:, block]
            diff[:, c] += 1.0
            cost = np.linalg.norm(diff, axis=1)
            allowed = (current != c) & (np.abs(diff).sum(axis=1) > 0.5) & (cost <= cap)
            if frozen is not None:
                allowed &= ~frozen[:, nc + k]
            costs.append(np.where(allowed, np.round(cost, 4), np.inf))
            columns.append(block.start + c)
            block_of.append(len(blocks) - 1)
    return _SingleChanges(
        X, base,
        np.column_stack(moved).astype(np.float32) if moved else np.zeros((m, 0), np.float32),
        np.asarray(columns, dtype=np.int64), blocks, np.asarray(block_of, dtype=np.int64),
        np.column_stack(costs).astype(np.float32) if costs else np.zeros((m, 0), np.float32),
    )  # fmt: skip
