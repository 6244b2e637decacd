"""A tuning trial's side of its study: after each epoch the run reports its dev score to the study
the suite opened (``peftbench.suite.tuning``) and stops when that study's pruner says so. Here,
below the suite, so that a single run never reaches up into the suite's tuning."""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable

from ..errors import ConfigError
from .spec import TuningSpec

# A trial's dev loss at its last reported epoch (an Optuna user attribute), and the rule that uses it.
DEV_LOSS = "dev_loss"
# How a pruned trial's record says why it stopped (read back when the suite tells its study).
PRUNED_PREFIX = "pruned by the tuning study"
STORAGE_ENV = "PEFTBENCH_TUNING_STORAGE"
_SECRETS = (re.compile(r"(://[^:/@]*:)[^@/]*@"), re.compile(r"((?:password|passwd|pwd)=)[^&;]*", re.IGNORECASE))


def masked(url: str) -> str:
    """The URL with its password as ***: the form that is printed and written."""
    url = _SECRETS[0].sub(r"\1***@", url)
    return _SECRETS[1].sub(r"\1***", url)


def trial_storage(written: str) -> str:
    """The storage a trial's spec names, its password taken from the environment the suite set."""
    given = os.environ.get(STORAGE_ENV)
    if given and masked(given) == written:
        return given
    if masked(written) != written or "***" not in written:
        return written
    raise ConfigError(f"the tuning storage {written} needs its password, which this process was not given",
                      f"run trials through `peftbench suite run`, which passes it in ${STORAGE_ENV}")


def make_pruner(name: str, trials: int, epochs: int):
    import optuna

    if name == "median":  # a trial is pruned once others have reported: the first ones run to the end
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, trials // 3), n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def pruning_check(tuning: TuningSpec) -> Callable[[dict[str, Any]], str | None]:
    """For a trial's run: after each epoch, report its dev score to its study and return a reason
    to stop when the study's pruner prunes it (the pruner the suite's study was opened with)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric = tuning.metric
    pruner = make_pruner(tuning.pruner, tuning.trials, tuning.epochs or 1)
    study = optuna.load_study(study_name=tuning.study, storage=trial_storage(tuning.storage), pruner=pruner)
    trial = optuna.trial.Trial(study, int(tuning.trial_id))

    def check(entry: dict[str, Any]) -> str | None:
        value = entry["dev_scores"].get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        trial.report(float(value), entry["epoch"])
        loss = entry.get("dev_loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):  # breaks ties on the dev score (chosen_trial)
            trial.set_user_attr(DEV_LOSS, float(loss))
        if tuning.epochs and entry["epoch"] >= tuning.epochs:
            return None  # a trial that trained to the end is complete: pruning it then would only hide it
        return f"{PRUNED_PREFIX} after epoch {entry['epoch']}" if trial.should_prune() else None

    return check
