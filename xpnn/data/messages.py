"""Rules and one-line messages for the command line's settings, kept out of cli.py so they can be tested alone.

`setting_minimum`: the smallest value an integer setting takes (seed 0 is numpy's and `fit`'s default, so a
Python run's config.json must be replayable with it). `check_run_config_data`: `xpnn train --config
runs/<id>/config.json` of a run trained from Python arrays has no data the CLI can load; say so instead of
training on SIGNS.
"""

from __future__ import annotations

from typing import Any

MINIMUMS = {"epochs": 0, "seed": 0}  # every other integer setting (batch_size, n_train, n_test) is >= 1
LOADABLE_SOURCES = ("signs", "embedded")


def setting_minimum(key: str) -> int:
    """The smallest value integer setting `key` may take."""
    return MINIMUMS.get(key, 1)


def check_int_setting(key: str, value: int, where: str) -> int:
    """`value` if it is at least `setting_minimum(key)`, else a one-line ValueError naming `where`."""
    low = setting_minimum(key)
    if value < low:
        raise ValueError(f"{where}: setting {key!r} must be >= {low}; got {value}.")
    return value


def check_run_config_data(config: dict[str, Any], where: str, data_given: bool = False) -> None:
    """Refuse a run config whose data the CLI cannot load again (a run trained from Python arrays).

    `data_given`: --data or --embedded was passed as well, so the settings are to be trained on that data.
    """
    data = config.get("data")
    source = data.get("source", "arrays") if isinstance(data, dict) else "arrays"
    if source in LOADABLE_SOURCES or data_given:
        return
    raise ValueError(
        f"{where} is the config of a run trained from Python arrays (data source {source!r}), which the CLI cannot "
        "load; repeat it in Python with model.fit(x, y, ...), or add --data <folder> or --embedded to train "
        "these settings on SIGNS or the embedded set."
    )
