"""Recourse constraints: which changes a counterfactual may propose, in original units.

A user states them per run (EMAP parameters ``pinned``/``immutable``, ``directions``, ``ranges``,
``categories``, ``max_changed``); ``Constraints.compile(schema)`` checks them against a data set
and gives a ``Recourse``, which

* bounds every continuous feature per row (``bounds``: model space, the same formula for numpy
  arrays and torch tensors, so EMAP's perturbation network clamps to them in training),
* projects any candidate onto what is allowed (``project``: the verification stage runs every
  candidate it asks the black box about through it), and
* checks a counterfactual exactly, in original units (``violations``: the reason per row, empty
  when it keeps every constraint).

Semantics. Leaving a feature unchanged is always allowed (a row outside an absolute range is not
forced to move). ``directions``: ``"increase"`` (the counterfactual's value >= the row's) or
``"decrease"``. ``ranges``: ``[lo, hi]`` (absolute bounds on a changed value), ``"+-N"`` (at most
N units either way) or ``"+-P%"`` (at most P% of the row's own value either way).
``categories``: the categories a changed categorical feature may take. ``max_changed``: at most
this many original features changed (0: no limit). Integer features move by whole units, so
their bounds are rounded inwards to whole steps from the row's value.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datasets.base import FeatureSchema

DIRECTIONS = ("increase", "decrease")
HUGE = 1e30  # "no bound" in arithmetic that must stay finite (0 * inf is NaN)
CHANGE_TOL = 1e-6  # model space: a smaller difference is no change (as in counterfactuals.TOL)
BOUND_TOL = 1e-4  # original units, relative to the feature's std: float32 rounding slack
_RELATIVE = re.compile(r"^\s*\+-\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


class ConstraintError(ValueError):
    """A constraint is malformed or names something the data set does not have; the message
    says which and what to write instead."""


def parse_mapping(name: str, raw: Any) -> dict[str, Any]:
    """A mapping parameter from a dict or its JSON text ("" or None: empty)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConstraintError(
                f"{name} must be a JSON object such as {EXAMPLES[name]}; {exc.msg} at character "
                f"{exc.pos} of {raw[:80]!r}"
            ) from None
    if not isinstance(raw, dict):
        raise ConstraintError(
            f"{name} must be a JSON object such as {EXAMPLES[name]}, got {type(raw).__name__}"
        )
    return {str(k): v for k, v in raw.items()}


EXAMPLES = {
    "directions": '{"age": "increase"}',
    "ranges": '{"hours-per-week": [20, 60], "capital-gain": "+-20%", "age": "+-5"}',
    "categories": '{"workclass": ["Private", "Self-emp-inc"]}',
}


def canonical_json(value: dict[str, Any]) -> str:
    """The one text form a mapping parameter is stored in ("" when empty)."""
    return json.dumps(value, sort_keys=True) if value else ""


@dataclass(frozen=True)
class Constraints:
    """What a user asked for, checked for form but not yet against a data set."""

    immutable: tuple[str, ...] = ()
    directions: tuple[tuple[str, str], ...] = ()
    ranges: tuple[tuple[str, Any], ...] = ()
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()
    max_changed: int = 0

    @classmethod
    def from_params(
        cls, immutable: Any, directions: Any, ranges: Any, categories: Any, max_changed: int
    ) -> Constraints:
        """Parse the parameter values (dicts or their JSON text); ``ConstraintError`` on bad form."""
        dirs = parse_mapping("directions", directions)
        for feature, d in dirs.items():
            if d not in DIRECTIONS:
                raise ConstraintError(
                    f'directions: {feature!r} has {d!r}; write "increase" or "decrease"'
                )
        rng: dict[str, Any] = {}
        for feature, spec in parse_mapping("ranges", ranges).items():
            rng[feature] = _parse_range(feature, spec)
        cats: dict[str, tuple[str, ...]] = {}
        for feature, allowed in parse_mapping("categories", categories).items():
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise ConstraintError(
                    f"categories: {feature!r} must map to a list of category names, got "
                    f"{json.dumps(allowed)[:80]}"
                )
            cats[feature] = tuple(allowed)
        if int(max_changed) < 0:
            raise ConstraintError(f"max_changed must be 0 (no limit) or more, got {max_changed}")
        return cls(
            tuple(str(f) for f in immutable), tuple(sorted(dirs.items())),
            tuple(sorted(rng.items())), tuple(sorted(cats.items())), int(max_changed),
        )  # fmt: skip

    @property
    def any(self) -> bool:
        return bool(
            self.immutable or self.directions or self.ranges or self.categories or self.max_changed
        )

    def compile(self, schema: FeatureSchema) -> Recourse:
        """Check every constraint against ``schema``; ``ConstraintError`` names the first that
        does not fit (unknown feature, a direction or range on a categorical feature, a
        category the feature does not have, a range with lo > hi)."""
        known = schema.original_names
        cont = {f.name: j for j, f in enumerate(schema.continuous)}
        cat = {f.name: k for k, f in enumerate(schema.categorical)}

        def check(kind: str, feature: str, want: dict[str, int] | None = None) -> int:
            if feature not in known:
                raise ConstraintError(
                    f"{kind}: no feature {feature!r}; features are {', '.join(known)}"
                )
            if want is not None and feature not in want:
                what = "continuous" if want is cont else "categorical"
                raise ConstraintError(f"{kind}: {feature!r} is not a {what} feature")
            return want[feature] if want is not None else -1

        for feature in self.immutable:
            check("immutable", feature)
        nc = schema.n_continuous
        std = np.array([f.std for f in schema.continuous], dtype=np.float64)
        mean = np.array([f.mean for f in schema.continuous], dtype=np.float64)
        lo, hi = (b.astype(np.float64) for b in schema.continuous_bounds())
        down, up = np.full(nc, HUGE), np.full(nc, HUGE)  # how far below / above x a value may go
        frac, delta = np.full(nc, HUGE), np.full(nc, HUGE)
        frozen = np.array([f.name in self.immutable for f in schema.continuous], dtype=bool)
        for feature, d in self.directions:
            j = check("directions", feature, cont)
            (down if d == "increase" else up)[j] = 0.0
        for feature, spec in self.ranges:
            j = check("ranges", feature, cont)
            if spec[0] == "abs":
                lo[j] = max(lo[j], (spec[1] - mean[j]) / std[j])
                hi[j] = min(hi[j], (spec[2] - mean[j]) / std[j])
            elif spec[0] == "pct":
                frac[j] = spec[1] / 100.0
            else:
                delta[j] = spec[1] / std[j]
        allowed: list[NDArray[np.bool_] | None] = [None] * len(schema.categorical)
        for feature, names in self.categories:
            k = check("categories", feature, cat)
            have = schema.categorical[k].categories
            unknown = [c for c in names if c not in have]
            if unknown:
                raise ConstraintError(
                    f"categories: {feature!r} has no category {', '.join(map(repr, unknown))}; "
                    f"its categories are {', '.join(have)}"
                )
            allowed[k] = np.array([c in names for c in have], dtype=bool)
        return Recourse(
            schema=schema, constraints=self, lo=lo, hi=hi, down=down, up=up, frac=frac,
            delta=delta, frozen=frozen, allowed=allowed, mean=mean, std=std,
            integer=np.array([f.integer for f in schema.continuous], dtype=bool),
            blocked=np.array([f.name in self.immutable for f in schema.categorical], dtype=bool),
        )  # fmt: skip


def _parse_range(feature: str, spec: Any) -> tuple[Any, ...]:
    hint = '[lo, hi], "+-N" (units) or "+-P%"'
    if isinstance(spec, list):
        if len(spec) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in spec
        ):
            raise ConstraintError(f"ranges: {feature!r} must be {hint}, got {json.dumps(spec)}")
        if spec[0] > spec[1]:
            raise ConstraintError(
                f"ranges: {feature!r} has lo {spec[0]} above hi {spec[1]}; write [lo, hi]"
            )
        return ("abs", float(spec[0]), float(spec[1]))
    if isinstance(spec, str):
        m = _RELATIVE.match(spec)
        if m:
            return ("pct" if m.group(2) else "delta", float(m.group(1)))
    raise ConstraintError(f"ranges: {feature!r} must be {hint}, got {json.dumps(spec)[:80]}")


@dataclass(frozen=True, eq=False)
class Recourse:
    """Constraints compiled against a schema: vectors over the continuous features (model space)
    and an allowed-category mask per categorical feature (None: any)."""

    schema: FeatureSchema
    constraints: Constraints
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    down: NDArray[np.float64]
    up: NDArray[np.float64]
    frac: NDArray[np.float64]
    delta: NDArray[np.float64]
    frozen: NDArray[np.bool_]
    allowed: list[NDArray[np.bool_] | None]
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    integer: NDArray[np.bool_]
    blocked: NDArray[np.bool_]

    @property
    def max_changed(self) -> int:
        return self.constraints.max_changed

    @property
    def immutable(self) -> tuple[str, ...]:
        return self.constraints.immutable

    def bounds(self, x: Any, consts: dict[str, Any] | None = None, hull: bool = False) -> Any:
        """Per-row (lo, hi) of each continuous feature in model space for rows ``x`` (n, nc).

        Works on numpy arrays, and on torch tensors when ``consts`` holds ``torch_consts()``.
        An empty interval (a direction that points out of an absolute range) becomes the row's
        own value. ``hull``: widen the interval to hold the row's value (training: clamping must
        never force a change the row does not need)."""
        maximum: Any
        minimum: Any
        where: Any
        if consts is None:
            consts = self.__dict__
            maximum, minimum, where = np.maximum, np.minimum, np.where
        else:
            import torch

            maximum, minimum, where = torch.maximum, torch.minimum, torch.where
        c = consts
        spread = abs(x * c["std"] + c["mean"]) * c["frac"] / c["std"]
        lo = maximum(maximum(c["lo"], x - c["delta"]), maximum(x - spread, x - c["down"]))
        hi = minimum(minimum(c["hi"], x + c["delta"]), minimum(x + spread, x + c["up"]))
        empty = lo > hi
        lo, hi = where(empty, x, lo), where(empty, x, hi)
        if hull:
            lo, hi = minimum(lo, x), maximum(hi, x)
        return lo, hi

    def torch_consts(self, device: Any) -> dict[str, Any]:
        import torch

        keys = ("lo", "hi", "down", "up", "frac", "delta", "mean", "std")
        return {
            k: torch.as_tensor(getattr(self, k), dtype=torch.float32, device=device) for k in keys
        }

    def whole_bounds(self, X: NDArray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``bounds`` for model-space rows ``X`` (n, d), with integer features' bounds rounded
        inwards to whole steps from the row's value (so snapping to whole units stays inside)."""
        nc = self.schema.n_continuous
        x = np.asarray(X, dtype=np.float64)[:, :nc]
        lo, hi = self.bounds(x)
        if self.integer.any():
            i = self.integer
            s = self.std[i]
            down = np.ceil((lo[:, i] - x[:, i]) * s - BOUND_TOL)
            up = np.floor((hi[:, i] - x[:, i]) * s + BOUND_TOL)
            ok = down <= up
            lo[:, i] = np.where(ok, x[:, i] + down / s, x[:, i])
            hi[:, i] = np.where(ok, x[:, i] + up / s, x[:, i])
        return lo, hi

    def project(
        self, X: NDArray, Z: NDArray, frozen: NDArray[np.bool_] | None = None
    ) -> NDArray[np.float32]:
        """``Z`` (n, d) moved onto what the constraints allow for rows ``X``: changed continuous
        values clipped to their row's bounds, an immutable feature, a disallowed category and
        the original features marked in ``frozen`` (n, features) set back to the row's value.
        ``max_changed`` is not projected (which features to keep is the caller's choice).
        Returns a new float32 array."""
        nc = self.schema.n_continuous
        X = np.asarray(X, dtype=np.float32)
        Z = np.array(Z, dtype=np.float32, copy=True)
        x, z = X[:, :nc], Z[:, :nc]
        lo, hi = self.whole_bounds(X)
        changed = np.abs(z - x) > CHANGE_TOL
        clipped = np.clip(z.astype(np.float64), lo, hi).astype(np.float32)
        keep = ~self.frozen[None, :] & changed
        if frozen is not None:
            keep &= ~frozen[:, :nc]
        Z[:, :nc] = np.where(keep, clipped, x)
        for k, f in enumerate(self.schema.categorical):
            b = f.block
            back = np.zeros(len(X), dtype=bool) if not self.blocked[k] else np.ones(len(X), bool)
            if frozen is not None:
                back |= frozen[:, nc + k]
            ok = self.allowed[k]
            if ok is not None:
                new, old = Z[:, b].argmax(axis=1), X[:, b].argmax(axis=1)
                back |= (new != old) & ~ok[new]
            Z[back, b] = X[back, b]
        return Z

    def violations(self, X: NDArray, Z: NDArray) -> NDArray[np.str_]:
        """Per row, the constraints counterfactual ``Z`` breaks for input ``X``, in original units
        ("" when it keeps all). Exact apart from float32 rounding (``BOUND_TOL`` of a std)."""
        nc = self.schema.n_continuous
        X = np.asarray(X, dtype=np.float64)
        Z = np.asarray(Z, dtype=np.float64)
        x, z = X[:, :nc], Z[:, :nc]
        out: list[list[str]] = [[] for _ in range(len(X))]
        lo, hi = self.bounds(x)
        changed_c = np.abs(z - x) > CHANGE_TOL
        tol = BOUND_TOL
        names = self.schema.original_names
        bad_lo = changed_c & (z < lo - tol)
        bad_hi = changed_c & (z > hi + tol)
        frozen_hit = changed_c & self.frozen[None, :]
        for i, j in zip(*np.nonzero(frozen_hit), strict=True):
            out[i].append(f"{names[j]} is immutable")
        for i, j in zip(*np.nonzero((bad_lo | bad_hi) & ~frozen_hit), strict=True):
            orig = z[i, j] * self.std[j] + self.mean[j]
            a = lo[i, j] * self.std[j] + self.mean[j]
            b = hi[i, j] * self.std[j] + self.mean[j]
            out[i].append(f"{names[j]} {orig:.6g} outside its allowed [{a:.6g}, {b:.6g}]")
        n_changed = changed_c.sum(axis=1)
        for k, f in enumerate(self.schema.categorical):
            new, old = Z[:, f.block].argmax(axis=1), X[:, f.block].argmax(axis=1)
            moved = new != old
            n_changed = n_changed + moved
            for i in np.flatnonzero(moved & self.blocked[k]):
                out[i].append(f"{f.name} is immutable")
            ok = self.allowed[k]
            if ok is not None:
                for i in np.flatnonzero(moved & ~ok[new] & ~self.blocked[k]):
                    out[i].append(f"{f.name} = {f.categories[new[i]]} is not an allowed category")
        if self.max_changed:
            for i in np.flatnonzero(n_changed > self.max_changed):
                out[i].append(
                    f"changes {n_changed[i]} features; at most {self.max_changed} allowed"
                )
        return np.array(["; ".join(r) for r in out], dtype=np.str_)
