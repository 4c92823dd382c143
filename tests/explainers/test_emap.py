"""EMAP's defining properties on small seeded data sets (seconds, no GPU)."""

from __future__ import annotations

import threading
from dataclasses import asdict, replace

import numpy as np
import pytest

from explainers.base import NotFittedError, ParamsError, params_from_dict
from explainers.counterfactuals import AS_IS, FAILED, BlackBoxCallError
from explainers.emap import EMAP, EMAPParams
from explainers.models import GRADIENTS
from explainers.quality import sparsity
from tests.explainers.cases import logistic, points, tabular

FAST = {"epochs": 12, "perturber_epochs": 30, "batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def clusters():
    ds = points()
    model = logistic(ds)
    emap = EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, model)
    return ds, model, emap


@pytest.fixture(scope="module")
def mixed():
    ds = tabular()
    return ds, logistic(ds)


def test_perturbed_points_flip_the_surrogate_and_the_black_box(clusters):
    ds, model, emap = clusters
    exp = emap.explain(ds.X_test)
    assert exp.diagnostics["flip_surrogate"].mean() >= 0.95
    assert exp.raw_success.mean() >= 0.9 and exp.success.mean() == 1.0
    assert exp.metrics["flip_rate_blackbox"] == exp.raw_success.mean()
    assert exp.metrics["validity"] == exp.success.mean()
    assert exp.metrics["surrogate_fidelity"] >= 0.95
    # The surrogate's verdict on EMAP's own (raw) counterfactuals is recomputable.
    s_pred = emap.surrogate_model().predict(exp.raw_counterfactuals)
    np.testing.assert_array_equal(s_pred == exp.targets, exp.diagnostics["flip_surrogate"])
    np.testing.assert_array_equal(
        exp.counterfactual_predictions, model.predict(exp.counterfactuals)
    )
    np.testing.assert_array_equal(
        exp.raw_counterfactual_predictions, model.predict(exp.raw_counterfactuals)
    )
    # The attributions are EMAP's own direction (the paper's negative perturbation).
    np.testing.assert_allclose(exp.attributions, -(exp.raw_counterfactuals - exp.inputs), atol=1e-6)
    # Binary: the target is always the other class than the black box's.
    np.testing.assert_array_equal(exp.targets, 1 - exp.predictions)
    pct = exp.diagnostics["norm_percentile"]
    assert np.all((pct >= 0) & (pct <= 100))
    # Minimal, not arbitrary: the logistic boundary is a line, so the least change that flips it
    # is known exactly. A successful flip moves at least that far, and EMAP (whose CE term keeps
    # pushing past the boundary until lambda balances it) should not move more than a few times it.
    # Verified counterfactuals are shrunk to the boundary (an axis move where one feature is
    # enough), raw ones are not.
    est = model.estimator
    dist = np.abs(est.decision_function(exp.inputs)) / np.linalg.norm(est.coef_)
    ratio = exp.diagnostics["perturbation_norm"][exp.success] / dist[exp.success]
    raw_ratio = exp.diagnostics["raw_perturbation_norm"][exp.raw_success] / dist[exp.raw_success]
    assert np.all(ratio >= 1 - 1e-4) and np.all(raw_ratio >= 1 - 1e-4)
    assert np.median(raw_ratio) < 3.0
    assert np.median(ratio) < 1.25
    lo, hi = ds.schema.continuous_bounds()
    assert np.all(exp.counterfactuals >= lo - 1e-6) and np.all(exp.counterfactuals <= hi + 1e-6)


def test_progress_is_reported_every_epoch_and_metrics_are_kept(clusters):
    ds, model, _ = clusters
    calls: list[tuple[float, str]] = []
    p = params_from_dict(EMAPParams, {**FAST, "epochs": 3, "perturber_epochs": 4})
    emap = EMAP(p).fit(ds, model, progress=lambda f, m: calls.append((f, m)))
    epochs = [m for _, m in calls if "epoch" in m]
    # every epoch of both stages and, per boundary round, of both networks again
    assert len(epochs) == 3 + 4 + p.boundary_rounds * 2 * p.boundary_epochs
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert emap.fit_seconds_ > 0
    assert 0.0 <= emap.metrics_["surrogate_fidelity_validation"] <= 1.0


def test_categorical_outputs_are_valid_one_hot_and_decode(mixed):
    ds, model = mixed
    emap = EMAP(params_from_dict(EMAPParams, {**FAST, "eta": 0.5})).fit(ds, model)
    exp = emap.explain(ds.X_test)
    cf = exp.counterfactuals
    for block in ds.schema.blocks:
        part = cf[:, block]
        assert set(np.unique(part)) <= {0.0, 1.0}
        np.testing.assert_array_equal(part.sum(axis=1), 1.0)
    changed = exp.diagnostics["categorical_changes"]
    assert changed.max() >= 1, "with a cheap eta some flips should change a category"
    frame = exp.schema.decode(cf)
    assert set(frame["colour"]) <= {"red", "green", "blue"}
    assert exp.success.mean() >= 0.85


def test_pinned_features_never_change(mixed):
    ds, model = mixed
    p = params_from_dict(EMAPParams, {**FAST, "eta": 0.2, "pinned": ("colour", "a")})
    exp = EMAP(p).fit(ds, model).explain(ds.X_test)
    np.testing.assert_array_equal(exp.counterfactuals[:, 0], exp.inputs[:, 0])
    block = ds.schema.categorical[0].block
    np.testing.assert_array_equal(exp.counterfactuals[:, block], exp.inputs[:, block])
    # What is not pinned still moves, so the flips still happen.
    assert np.abs(exp.counterfactuals[:, 1] - exp.inputs[:, 1]).max() > 0.1
    assert exp.success.mean() >= 0.8


def test_another_seed_gives_other_networks(clusters):
    ds, model, emap = clusters
    other = EMAP(params_from_dict(EMAPParams, {**FAST, "seed": 1})).fit(ds, model)
    a, b = emap.explain(ds.X_test), other.explain(ds.X_test)
    assert not np.array_equal(a.counterfactuals, b.counterfactuals)


def test_a_saved_emap_perturbs_without_its_black_box(clusters, tmp_path):
    ds, _, emap = clusters
    exp = emap.explain(ds.X_test)
    bare = EMAP.load(emap.save(tmp_path / "emap"))
    cf, targets = bare.perturb(ds.X_test, exp.predictions)
    np.testing.assert_array_equal(cf, exp.raw_counterfactuals)
    np.testing.assert_array_equal(targets, exp.targets)
    np.testing.assert_array_equal(
        bare.norm_percentile(exp.diagnostics["perturbation_norm"], exp.success),
        exp.diagnostics["norm_percentile"],
    )
    assert bare.surrogate_model().predict(ds.X_test[:5]).shape == (5,)


def test_parameters_that_do_not_fit_the_data_set_are_refused(clusters):
    ds, model, _ = clusters
    with pytest.raises(ParamsError, match="no such feature"):
        EMAP(params_from_dict(EMAPParams, {**FAST, "pinned": ("race",)})).fit(ds, model)
    with pytest.raises(ParamsError, match="target"):
        EMAP(params_from_dict(EMAPParams, {**FAST, "target": 5})).fit(ds, model)
    with pytest.raises(NotFittedError):
        EMAP().surrogate_model()


def test_multiclass_runner_up_and_chosen_target():
    ds = points(900, classes=3)
    model = logistic(ds)
    emap = EMAP(params_from_dict(EMAPParams, {**FAST, "perturber_epochs": 20})).fit(ds, model)
    exp = emap.explain(ds.X_test)
    probs = emap.surrogate_model().predict_proba(ds.X_test)
    probs[np.arange(len(probs)), exp.predictions] = -1
    np.testing.assert_array_equal(exp.targets, probs.argmax(axis=1))
    assert exp.success.mean() >= 0.85
    targets = (exp.predictions + 1) % 3
    chosen = emap.explain(ds.X_test, targets=targets)
    np.testing.assert_array_equal(chosen.targets, targets)
    assert chosen.success.mean() >= 0.8
    # A target equal to the black box's class is replaced by the runner-up, and flagged.
    same = emap.explain(ds.X_test[:10], targets=exp.predictions[:10])
    assert same.diagnostics["target_replaced"].all()
    np.testing.assert_array_equal(same.targets, exp.targets[:10])


def test_surrogate_model_is_a_gradient_capable_model(clusters):
    import torch

    ds, model, emap = clusters
    sur = emap.surrogate_model()
    assert GRADIENTS in sur.capabilities and sur.n_classes == 2
    x = torch.tensor(ds.X_test[:5], requires_grad=True)
    sur.logits(x)[:, 1].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (sur.predict(ds.X_test) == model.predict(ds.X_test)).mean() >= 0.95


# ---------------------------------------------------------------- verified counterfactuals
def test_verified_counterfactuals_flip_are_no_larger_than_raw_and_keep_pins(mixed):
    ds, model = mixed
    p = params_from_dict(EMAPParams, {**FAST, "eta": 0.5, "pinned": ("b",)})
    exp = EMAP(p).fit(ds, model).explain(ds.X_test)
    assert exp.verified and exp.raw_counterfactuals is not None
    ok = exp.success
    assert ok.mean() >= 0.98
    np.testing.assert_array_equal(model.predict(exp.counterfactuals[ok]), exp.targets[ok])
    # "as is" exactly where EMAP's own counterfactual flipped the black box (no whole-number
    # features here, so checking changes nothing about the proposal)
    np.testing.assert_array_equal(exp.counterfactual_status == AS_IS, exp.raw_success)
    size = np.linalg.norm(exp.perturbations, axis=1)
    raw_size = np.linalg.norm(exp.raw_perturbations, axis=1)
    assert np.all(size[exp.raw_success] <= raw_size[exp.raw_success] + 1e-5)
    np.testing.assert_allclose(exp.diagnostics["perturbation_norm"], size, rtol=1e-5)
    for cf in (exp.counterfactuals, exp.raw_counterfactuals):
        np.testing.assert_array_equal(cf[:, 1], exp.inputs[:, 1])  # "b" is pinned
        for block in ds.schema.blocks:
            assert set(np.unique(cf[:, block])) <= {0.0, 1.0}
            np.testing.assert_array_equal(cf[:, block].sum(axis=1), 1.0)
    # verified counterfactuals change fewer features than EMAP's own ones
    changed = exp.diagnostics["features_changed"]
    assert changed[ok].mean() < sparsity(exp.inputs, exp.raw_counterfactuals, ds.schema).mean()
    assert exp.metrics["verify_blackbox_calls"] <= EMAPParams().verify_calls


def test_rows_without_a_counterfactual_are_marked_failed_and_keep_emaps_own(mixed):
    ds, model = mixed
    # only "shape" may change: a row flips only if switching its shape flips the black box
    pinned = ("a", "b", "colour")
    exp = (
        EMAP(params_from_dict(EMAPParams, {**FAST, "pinned": pinned}))
        .fit(ds, model)
        .explain(ds.X_test)
    )
    switched = ds.X_test.copy()
    switched[:, 5:7] = 1.0 - switched[:, 5:7]
    possible = model.predict(switched) != exp.predictions
    assert 0 < possible.sum() < len(possible)
    failed = exp.failed
    np.testing.assert_array_equal(failed, ~possible)
    assert np.all(exp.counterfactual_status[possible] != FAILED)
    np.testing.assert_array_equal(exp.success, possible)
    # failures are kept: EMAP's own counterfactual, the black box's class for it, ranked last
    np.testing.assert_array_equal(exp.counterfactuals[failed], exp.raw_counterfactuals[failed])
    np.testing.assert_array_equal(
        exp.counterfactual_predictions[failed], exp.raw_counterfactual_predictions[failed]
    )
    pct = exp.diagnostics["norm_percentile"]
    assert np.all(pct[failed] == pct[failed][0]) and pct[failed][0] > pct[~failed].max()
    assert [exp.status_names()[i] for i in np.flatnonzero(failed)] == ["failed"] * failed.sum()
    assert exp.metrics["validity"] == possible.mean()


class _Failing:
    """``model`` as a black box that fails on its call number ``fail_at`` (0: never), as a model
    server going away would, and records which threads asked it."""

    def __init__(self, model, n_features: int) -> None:
        self.model = model
        self.n_classes, self.class_names = model.n_classes, model.class_names
        self.n_features, self.description = n_features, "failing"
        self.capabilities = frozenset()
        self.threads: set[int] = set()
        self.calls, self.fail_at = 0, 0

    def predict_proba(self, X):
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.calls == self.fail_at:
            raise ConnectionError("connection to the model server lost")
        return self.model.predict_proba(X)

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def test_a_black_box_failing_during_verification_gives_a_clear_error_and_loses_nothing(mixed):
    ds, model = mixed

    flaky = _Failing(model, ds.n_features)
    emap = EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, flaky)
    before = emap.explain(ds.X_test)
    flaky.fail_at, flaky.calls = 3, 0  # explain's own call, EMAP's raw check, then refine's
    with pytest.raises(
        BlackBoxCallError, match="model server lost.*unchanged.*run the explanation again"
    ):
        emap.explain(ds.X_test)
    after = emap.explain(ds.X_test)  # the fitted EMAP is intact
    np.testing.assert_array_equal(after.counterfactuals, before.counterfactuals)
    np.testing.assert_array_equal(after.counterfactual_status, before.counterfactual_status)


def test_training_is_deterministic_on_the_cpu_and_draws_noise_only_from_its_generator(
    mixed, monkeypatch
):
    """The same seed gives the same networks and counterfactuals. Dropout masks and Gumbel noise
    come from EMAP's seeded CPU generator (then moved to the device), never from torch's
    samplers that draw on the device's own generator, so a GPU draws the same numbers."""
    import torch

    def device_sampler(*args, **kwargs):
        raise AssertionError("noise drawn by a device sampler")

    monkeypatch.setattr(torch.nn.functional, "dropout", device_sampler)
    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", device_sampler)
    ds, model = mixed
    params = params_from_dict(EMAPParams, {**FAST, "eta": 0.5, "seed": 7})
    runs = [EMAP(params).fit(ds, model) for _ in range(2)]
    for name in ("surrogate_", "perturber_"):
        a, b = (getattr(r, name).state_dict() for r in runs)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert runs[0].history_ == runs[1].history_
    e0, e1 = (r.explain(ds.X_test) for r in runs)
    np.testing.assert_array_equal(e0.raw_counterfactuals, e1.raw_counterfactuals)
    np.testing.assert_array_equal(e0.counterfactuals, e1.counterfactuals)
    np.testing.assert_array_equal(
        e0.diagnostics["norm_percentile"], e1.diagnostics["norm_percentile"]
    )


def test_the_kept_perturber_is_the_epoch_with_the_best_held_out_black_box_flip_rate(clusters):
    ds, model, _ = clusters
    p = params_from_dict(EMAPParams, {**FAST, "perturber_epochs": 6, "boundary_rounds": 1})
    emap = EMAP(p).fit(ds, model)
    flips = [h["flip_blackbox"] for h in emap.history_ if h["stage"] == 2]
    assert len(flips) == p.perturber_epochs + p.boundary_epochs
    best = max(flips)
    # ties go to the later epoch (trained against the surrogate that knows more of the boundary)
    assert emap.selected_epoch_ == len(flips) - flips[::-1].index(best)
    assert emap.metrics_["flip_rate_blackbox_validation"] == pytest.approx(best)
    last = EMAP(params_from_dict(EMAPParams, {**asdict(p), "select_epoch": False})).fit(ds, model)
    assert last.selected_epoch_ == len(flips)


def test_beyond_epoch_rows_an_epoch_is_a_fixed_number_of_steps(mixed, monkeypatch):
    """Training cost bounded by steps (issue 19): with four times the rows past ``EPOCH_ROWS``,
    every stage takes as many optimisation steps as at ``EPOCH_ROWS`` rows, each epoch drawing a
    fresh sample, and boundary rounds keep the counterfactuals' share of each surrogate epoch."""
    import torch

    import explainers.emap as emap_module

    ds, model = mixed
    cap = 64
    monkeypatch.setattr(emap_module, "EPOCH_ROWS", cap)
    emap = EMAP(params_from_dict(EMAPParams, dict(FAST, batch_size=16)))
    emap.device_ = "cpu"
    gen = torch.Generator().manual_seed(0)
    one = emap._batches([10 * cap], gen)
    assert [len(b) for b in one] == [16] * (cap // 16)
    again = torch.cat(emap._batches([10 * cap], gen))
    assert set(torch.cat(one).tolist()) != set(again.tolist())  # a fresh draw every epoch
    pooled = torch.cat(emap._batches([10 * cap, cap // 2, cap // 2], gen)).tolist()
    assert len(pooled) == 2 * cap == len(set(pooled))
    assert sum(i >= 10 * cap for i in pooled) == cap  # all the (few) counterfactual rows
    small = torch.cat(emap._batches([cap, cap], gen)).tolist()  # below the cap: a whole pass
    assert sorted(small) == list(range(2 * cap))

    steps: list[int] = []
    real_step = torch.optim.Adam.step

    def counting(self, *a, **k):
        steps.append(1)
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    quick = dict(FAST, batch_size=16, epochs=2, perturber_epochs=2, boundary_rounds=1, verify=False)
    counts = []
    for n in (len(ds.X_train), 4 * len(ds.X_train)):
        k = n // len(ds.X_train)
        big = replace(ds, X_train=np.tile(ds.X_train, (k, 1)), y_train=np.tile(ds.y_train, k))
        steps.clear()
        EMAP(params_from_dict(EMAPParams, quick)).fit(big, model)
        counts.append(len(steps))
    assert len(ds.X_train) > cap and counts[0] == counts[1]


def test_option_diversity_matches_the_per_row_definition():
    """The diversity figures of several options per row, computed a column at a time (a 250,000-
    row run spent about 10 CPU s in a per-row loop), equal the per-row definition: distinct
    changed-feature sets among a row's valid options, and the mean distance over all pairs of
    them (rows with two or more)."""
    from itertools import combinations

    from explainers.emap import _option_diversity

    rng = np.random.default_rng(3)
    for k in (2, 3, 5, 10):
        n, f, d = 400, 4, 6
        valid = rng.random((n, k)) < 0.7
        sets = rng.random((n, k, f)) < 0.3
        sets[:, -1] = sets[:, 0]  # the last option often repeats the first's set
        cfs = [rng.normal(size=(n, d)).astype(np.float32) for _ in range(k)]
        distinct, dists = _option_diversity(valid, sets, cfs)
        want_distinct = [
            len({sets[i, j].tobytes() for j in np.flatnonzero(valid[i])}) for i in range(n)
        ]
        want_dists = [
            np.mean([np.linalg.norm(cfs[a][i] - cfs[b][i]) for a, b in combinations(ok, 2)])
            for i in range(n)
            if len(ok := np.flatnonzero(valid[i])) >= 2
        ]
        assert distinct.tolist() == want_distinct
        np.testing.assert_allclose(dists, want_dists, rtol=1e-6)
    none = _option_diversity(
        np.zeros((3, 2), bool), np.zeros((3, 2, 1), bool), [np.zeros((3, 1))] * 2
    )
    assert none[0].tolist() == [0, 0, 0] and len(none[1]) == 0


@pytest.mark.parametrize("classes", [2, 3])
def test_training_asks_the_surrogate_about_bounded_batches_only(monkeypatch, classes):
    """What grows with the rows during training stays batched: the surrogate is never run on the
    whole training split at once (its probabilities for the perturber's targets were computed for
    every training row in one pass per stage: 0.6 GB of activations per layer at 740,000 rows).
    Binary targets need no probabilities at all (the runner-up is the other class)."""
    import explainers.emap as emap_module

    for name, value in (("EXPLAIN_BATCH", 32), ("VALIDATION_ROWS", 16)):
        monkeypatch.setattr(emap_module, name, value)
    monkeypatch.setattr(emap_module, "NORM_REFERENCE_ROWS", 16)
    seen: list[int] = []
    real_build = emap_module.build_mlp

    def recording_build(config):
        net = real_build(config)
        net.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
        return net

    monkeypatch.setattr(emap_module, "build_mlp", recording_build)
    ds = points(classes=classes)
    quick = dict(FAST, batch_size=16, epochs=2, perturber_epochs=2, boundary_rounds=1, verify=False)
    EMAP(params_from_dict(EMAPParams, quick)).fit(ds, logistic(ds))
    assert len(ds.X_train) > 400 and seen and max(seen) <= 32


@pytest.fixture(scope="module")
def image_emaps():
    """Two seeds of EMAP on tiny two-class images, with their explanations of the test rows."""
    from tests.explainers.cases import images

    ds = images(side=8, classes=2, per_class=80)
    model = logistic(ds)
    fast = {**FAST, "epochs": 6, "perturber_epochs": 6, "boundary_rounds": 1}
    emaps = [
        EMAP(params_from_dict(EMAPParams, {**fast, "seed": seed})).fit(ds, model) for seed in (0, 1)
    ]
    return ds, model, emaps, [e.explain(ds.X_test) for e in emaps]


def test_image_counterfactuals_come_from_training_images_the_same_for_two_seeds(image_emaps):
    """On images EMAP keeps a bank of training images per black-box class: two seeds give other
    raw counterfactuals but the same verified ones, each marked as made from a training image,
    each flipping the black box, within the call bound."""
    from explainers.counterfactuals import FROM_IMAGE

    ds, model, emaps, (a, b) = image_emaps
    assert not np.array_equal(a.raw_counterfactuals, b.raw_counterfactuals)
    np.testing.assert_array_equal(a.counterfactuals, b.counterfactuals)
    assert np.all(a.counterfactual_status == FROM_IMAGE) and a.success.all()
    assert a.status_names()[0] == "from a training image"
    np.testing.assert_array_equal(model.predict(a.counterfactuals), a.targets)
    assert a.metrics["verify_blackbox_calls"] <= emaps[0].params.verify_calls
    assert np.median(a.diagnostics["features_changed"]) < 0.25 * ds.n_features


def test_a_saved_image_emap_keeps_its_bank_and_one_saved_without_verifies_its_own(
    image_emaps, tmp_path
):
    from safetensors.numpy import load_file, save_file

    from explainers.counterfactuals import FROM_IMAGE
    from explainers.emap import PERTURBER_FILE

    ds, model, emaps, (a, _) = image_emaps
    folder = emaps[0].save(tmp_path / "emap")
    loaded = EMAP.load(folder, model)
    np.testing.assert_array_equal(loaded.bank_.images, emaps[0].bank_.images)
    again = loaded.verify(ds.X_test, a.raw_counterfactuals, a.targets)
    np.testing.assert_array_equal(again.counterfactuals, a.counterfactuals)
    # an EMAP saved before the bank existed: no bank, its own proposals are verified
    weights = load_file(str(folder / PERTURBER_FILE))
    save_file({k: v for k, v in weights.items() if not k.startswith("bank_")},
              str(folder / PERTURBER_FILE))  # fmt: skip
    old = EMAP.load(folder, model)
    assert old.bank_ is None
    own = old.verify(ds.X_test, a.raw_counterfactuals, a.targets)
    assert not np.any(own.status == FROM_IMAGE)
    assert np.all(model.predict(own.counterfactuals[own.valid]) == a.targets[own.valid])


def test_a_black_box_in_another_process_verifies_two_chunks_at_once_with_the_same_result(
    mixed, monkeypatch
):
    """A sandboxed black box answers one chunk of rows while the job works on the next: chunks
    are verified in two threads, and every counterfactual, status and option is what one chunk
    after another gives. A failure in either chunk stops the verification with the black box's
    error (nothing half-done is returned), and a cancel stops it too."""

    import explainers.emap as emap_module
    from explainers.base import Cancelled

    ds, model = mixed

    box = _Failing(model, ds.n_features)
    emap = EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, box)
    monkeypatch.setattr(emap_module, "OVERLAP_MIN_ROWS", 16)
    monkeypatch.setattr(emap_module, "_answers_elsewhere", lambda m: False)
    one_by_one = emap.explain(ds.X_test)
    box.threads.clear()
    monkeypatch.setattr(emap_module, "_answers_elsewhere", lambda m: m is box)
    both = emap.explain(ds.X_test)
    assert len(box.threads - {threading.get_ident()}) >= 2  # worker threads asked it
    np.testing.assert_array_equal(both.counterfactuals, one_by_one.counterfactuals)
    np.testing.assert_array_equal(both.counterfactual_status, one_by_one.counterfactual_status)
    for name in ("option_counterfactuals", "option_status"):
        np.testing.assert_array_equal(both.diagnostics[name], one_by_one.diagnostics[name])
    assert both.metrics["verify_rows_asked"] == one_by_one.metrics["verify_rows_asked"]
    box.calls, box.fail_at = 0, 12
    with pytest.raises(BlackBoxCallError, match="model server lost"):
        emap.explain(ds.X_test)
    monkeypatch.setattr(emap_module, "VERIFY_ROWS", 8)  # many chunks: any one failing stops all
    assert len(ds.X_test) > 4 * 8
    for fail_at in (3, 20):
        box.calls, box.fail_at = 0, fail_at
        with pytest.raises(BlackBoxCallError, match="model server lost"):
            emap.explain(ds.X_test)
    box.fail_at = 0
    asked = []
    with pytest.raises(Cancelled):
        emap.explain(ds.X_test, should_stop=lambda: bool(asked.append(1)) or len(asked) > 3)


def test_a_big_run_gets_one_counterfactual_per_row_by_default_and_says_so(mixed, monkeypatch):
    """Over ``BIG_RUN_ROWS`` explained rows the default is one verified counterfactual per row
    (each further option costs about two more first options); the run's metrics and note say
    so, and an explicit ``n_counterfactuals`` still gets what it asks for."""
    import explainers.emap as emap_module

    ds, model = mixed
    emap = EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, model)
    small = emap.explain(ds.X_test[:40])
    assert small.metrics["counterfactuals_per_row"] == 3 and "option_status" in small.diagnostics
    monkeypatch.setattr(emap_module, "BIG_RUN_ROWS", 39)
    big = emap.explain(ds.X_test[:40])
    assert big.metrics["counterfactuals_per_row"] == 1
    assert "option_status" not in big.diagnostics and "option_validity" not in big.metrics
    assert "one verified counterfactual per row, not 3: 40 rows" in big.provenance.note
    np.testing.assert_array_equal(big.counterfactuals, small.counterfactuals)  # the first option
    emap.params = replace(emap.params, n_counterfactuals=3)
    asked = emap.explain(ds.X_test[:40])
    assert asked.metrics["counterfactuals_per_row"] == 3
    assert "one verified" not in asked.provenance.note
