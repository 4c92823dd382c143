"""Which ``.skops`` files may be loaded: an allow-list of exact, resolved identities.

A skops file names every object it rebuilds as ``(__module__, __class__)`` with a loader
(``ObjectNode``, ``ConstructorFromReduceNode`` ...). skops' own ``get_untrusted_types`` leaves the
decision to the caller, and a prefix rule ("anything under ``sklearn.`` or ``numpy.``") is not a
decision: many names under those packages are re-exports of standard-library classes
(``subprocess.Popen``, ``gzip.GzipFile``, ``threading.Thread``, ``functools.partial``), and
``numpy.memmap`` reads and writes any file. A reduce node calls ``cls(*args)`` with arguments from
the file, so any such class is code execution.

So the check here is exact. ``ALLOWED_CLASSES`` lists the class objects themselves, imported by
this module; a file's type is allowed only if its ``(module, name)`` pair equals the *defining*
module and qualified name of one of them (a re-export's path never matches). Only the loaders
that rebuild plain data and estimators are allowed; functions, methods, ``functools.partial``
and operator nodes are refused outright (a ``FunctionTransformer`` would call them on every
prediction). The file's ``schema.json`` is read as JSON and walked here, so checking a file never
imports a module because the file names it; skops imports only names that passed.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

# Loaders that rebuild data, arrays and objects. Not allowed: FunctionNode, MethodNode,
# PartialNode, OperatorFuncNode (they hand out callables chosen by the file). The reduce loaders
# call ``cls(*args)`` with arguments from the file, which is safe only because ``cls`` must be
# one of the allowed classes (plain data types and estimators). A FunctionTransformer is allowed
# as a class (ColumnTransformer's "passthrough" is one with no function); any function it names
# comes as a FunctionNode and is refused.
ALLOWED_LOADERS = frozenset(
    {
        "CachedNode", "DictNode", "DefaultDictNode", "ListNode", "SetNode", "TupleNode",
        "SliceNode", "JsonNode", "ObjectNode", "TypeNode", "NdArrayNode", "MaskedArrayNode",
        "DTypeNode", "RandomStateNode", "RandomGeneratorNode", "SparseMatrixNode", "TreeNode",
        "SGDNode", "LossNode", "ReduceNode", "ConstructorFromReduceNode",
    }
)  # fmt: skip


def _classes() -> list[type]:
    """The classes a supported model may contain (imported here; a missing one is skipped, so the
    list follows the installed scikit-learn version without ever widening to a prefix)."""
    import importlib

    import numpy as np

    wanted = {
        # classifiers that give predict_proba
        "sklearn.ensemble": [
            "RandomForestClassifier", "ExtraTreesClassifier", "GradientBoostingClassifier",
            "HistGradientBoostingClassifier", "AdaBoostClassifier", "BaggingClassifier",
            "VotingClassifier", "StackingClassifier",
        ],
        "sklearn.tree": ["DecisionTreeClassifier", "ExtraTreeClassifier", "DecisionTreeRegressor",
                         "ExtraTreeRegressor"],
        "sklearn.linear_model": ["LogisticRegression", "LogisticRegressionCV", "SGDClassifier",
                                 "LinearRegression", "Ridge"],
        "sklearn.svm": ["SVC", "NuSVC"],
        "sklearn.neighbors": ["KNeighborsClassifier", "KDTree", "BallTree", "NearestNeighbors"],
        "sklearn.naive_bayes": ["GaussianNB", "BernoulliNB", "MultinomialNB", "CategoricalNB",
                                "ComplementNB"],
        "sklearn.neural_network": ["MLPClassifier"],
        "sklearn.discriminant_analysis": ["LinearDiscriminantAnalysis",
                                          "QuadraticDiscriminantAnalysis"],
        "sklearn.calibration": ["CalibratedClassifierCV", "_CalibratedClassifier",
                                "_SigmoidCalibration"],
        "sklearn.dummy": ["DummyClassifier", "DummyRegressor"],
        # pipelines and transformers
        "sklearn.pipeline": ["Pipeline", "FeatureUnion"],
        "sklearn.compose": ["ColumnTransformer"],
        "sklearn.preprocessing": [
            "StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer",
            "OneHotEncoder", "OrdinalEncoder", "LabelEncoder", "LabelBinarizer", "KBinsDiscretizer",
            "PolynomialFeatures", "QuantileTransformer", "PowerTransformer", "TargetEncoder",
            "Binarizer", "FunctionTransformer",
        ],
        "sklearn.impute": ["SimpleImputer", "MissingIndicator", "KNNImputer"],
        "sklearn.decomposition": ["PCA", "TruncatedSVD"],
        "sklearn.feature_selection": ["VarianceThreshold"],
        # fitted internals the estimators above hold
        "sklearn.tree._tree": ["Tree"],
        "sklearn.ensemble._hist_gradient_boosting.binning": ["_BinMapper"],
        "sklearn.ensemble._hist_gradient_boosting.predictor": ["TreePredictor"],
        "sklearn._loss.loss": ["HalfBinomialLoss", "HalfMultinomialLoss", "HalfSquaredError",
                               "ExponentialLoss"],
        "sklearn._loss._loss": ["CyHalfBinomialLoss", "CyHalfMultinomialLoss",
                                "CyHalfSquaredError", "CyExponentialLoss"],
        "sklearn._loss.link": ["Interval", "LogitLink", "HalfLogitLink", "IdentityLink",
                               "MultinomialLogit"],
        "sklearn.neural_network._stochastic_optimizers": ["AdamOptimizer", "SGDOptimizer"],
        "sklearn.isotonic": ["IsotonicRegression"],
        "sklearn.utils._bunch": ["Bunch"],
        "sklearn.neighbors._kd_tree": ["KDTree"],
        "sklearn.neighbors._ball_tree": ["BallTree"],
        "scipy.sparse": ["csr_matrix", "csc_matrix", "coo_matrix", "csr_array", "csc_array",
                         "coo_array"],
        "numpy.random": ["RandomState", "Generator", "MT19937", "PCG64"],
    }  # fmt: skip
    classes: list[type] = [
        np.ndarray, np.ma.MaskedArray, np.dtype, np.float16, np.float32, np.float64,
        np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.bool_, np.str_, np.bytes_, np.object_, np.complex128,
        int, float, str, bool, bytes, list, tuple, dict, set, slice, type(None),
    ]  # fmt: skip
    from collections import OrderedDict, defaultdict

    classes += [OrderedDict, defaultdict]
    for module_name, names in wanted.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in names:
            obj = getattr(module, name, None)
            if isinstance(obj, type):
                classes.append(obj)
    return classes


def identity(cls: type) -> tuple[str, str]:
    """The defining ``(module, qualified name)`` of a class: what it really is, whatever path
    re-exports it."""
    return cls.__module__, cls.__qualname__


_ALLOWED: frozenset[tuple[str, str]] | None = None


def allowed_identities() -> frozenset[tuple[str, str]]:
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = frozenset(identity(c) for c in _classes())
    return _ALLOWED


class SkopsRefused(ValueError):
    """The file names a type or loader outside the allow-list; ``names`` lists what was found."""

    def __init__(self, names: list[str], why: str) -> None:
        self.names = names
        super().__init__(why)


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item or "__class__" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def read_schema(data: bytes) -> Any:
    """``schema.json`` of a skops file, parsed as JSON (nothing else is read or run)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read("schema.json"))


def check(data: bytes) -> list[str]:
    """Check every node of a skops file; returns the ``module.name`` types it holds.

    Raises ``SkopsRefused`` naming the first few types or loaders that are not allowed.
    """
    allowed = allowed_identities()
    bad: list[str] = []
    seen: set[str] = set()
    for node in _nodes(read_schema(data)):
        loader = node.get("__loader__")
        module, name = node.get("__module__"), node.get("__class__")
        if loader is not None and loader not in ALLOWED_LOADERS:
            bad.append(f"{module}.{name} (loaded as {loader})")
            continue
        if module is None and name is None:
            continue  # a cached reference to a node already checked
        if not isinstance(module, str) or not isinstance(name, str):
            bad.append(f"{module!r}.{name!r}")
            continue
        if (module, name) not in allowed:
            bad.append(f"{module}.{name}")
            continue
        seen.add(f"{module}.{name}")
    if bad:
        unique = list(dict.fromkeys(bad))
        raise SkopsRefused(unique, f"types outside Flipscope's allow-list: {', '.join(unique[:5])}")
    return sorted(seen)
