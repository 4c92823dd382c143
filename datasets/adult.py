"""UCI Adult, preprocessed as the EMAP paper did (spec section 3.0).

Both shipped parts (adult.data and adult.test, 48,842 rows) are pooled. The columns fnlwgt, education,
relationship, native-country, capital-gain and capital-loss are dropped, then rows with a missing
value ("?") in what is left; the classes are balanced by undersampling ">50K"'s larger opposite; the
result (22,844 rows) is split 75/25, giving the paper's 17,133/5,711. age, education-num and
hours-per-week are z-scored with the training split's mean and std; workclass, marital-status,
occupation, race and sex are one-hot encoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from datasets.base import CategoricalFeature, ContinuousFeature, Dataset, FeatureSchema

DATA_DIR = Path(__file__).resolve().parent / "data"
COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
    "income",
]  # fmt: skip
DROPPED = ["fnlwgt", "education", "relationship", "native-country", "capital-gain", "capital-loss"]
CONTINUOUS = ["age", "education-num", "hours-per-week"]
CATEGORICAL = ["workclass", "marital-status", "occupation", "race", "sex"]
IMMUTABLE = ("race", "sex")
CLASSES = ["<=50K", ">50K"]
ONLINE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"


def read_raw(folder: Path = DATA_DIR) -> pd.DataFrame:
    """Both parts of the original text files, pooled, labels without the test part's full stop."""
    parts = [
        pd.read_csv(
            folder / "adult.data.gz",
            header=None,
            names=COLUMNS,
            skipinitialspace=True,
            na_values="?",
        ),
        pd.read_csv(
            folder / "adult.test.gz",
            header=None,
            names=COLUMNS,
            skipinitialspace=True,
            na_values="?",
            skiprows=1,
        ),
    ]
    raw = pd.concat(parts, ignore_index=True)
    raw["income"] = raw["income"].str.rstrip(".")
    return raw


def load_adult(seed: int = 0) -> Dataset:
    raw = read_raw().drop(columns=DROPPED).dropna().reset_index(drop=True)
    positive = raw[raw["income"] == ">50K"]
    negative = raw[raw["income"] == "<=50K"].sample(n=len(positive), random_state=seed)
    balanced = (
        pd.concat([negative, positive]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    )
    y = (balanced.pop("income") == ">50K").to_numpy(dtype=np.int64)
    train, test, y_train, y_test = train_test_split(
        balanced, y, test_size=0.25, random_state=seed, stratify=y
    )
    continuous = tuple(
        ContinuousFeature(
            name,
            mean=float(train[name].mean()),
            std=float(train[name].std(ddof=0)),
            lo=float((train[name].min() - train[name].mean()) / train[name].std(ddof=0)),
            hi=float((train[name].max() - train[name].mean()) / train[name].std(ddof=0)),
            integer=True,
        )
        for name in CONTINUOUS
    )
    categorical = []
    start = len(CONTINUOUS)
    for name in CATEGORICAL:
        categories = tuple(sorted(balanced[name].astype(str).unique()))
        categorical.append(CategoricalFeature(name, categories, start))
        start += len(categories)
    schema = FeatureSchema(continuous, tuple(categorical))
    return Dataset(
        name="adult",
        modality="tabular",
        schema=schema,
        class_names=CLASSES,
        X_train=schema.encode(train),
        y_train=np.asarray(y_train, dtype=np.int64),
        X_test=schema.encode(test),
        y_test=np.asarray(y_test, dtype=np.int64),
        description="UCI Adult census income, balanced, 3 continuous + 5 categorical features (EMAP paper set-up).",
        provenance={
            "source": "UCI Machine Learning Repository, Dua and Graff 2017 (CC BY 4.0)",
            "online": ONLINE_URL,
            "preprocessing": "pooled data+test; dropped "
            + ", ".join(DROPPED)
            + "; dropped rows with '?'; "
            "balanced by undersampling; 75/25 split",
        },
    )
