"""One run, from its spec to its record: the spec resolved against the components (spec), the
trainable-parameter count and budget match (counting), the runner that loads, trains, scores and
records (runner, state, trainer, deployed), what it measures (measure/, memory, memory_accounting,
forgetting, compiled), its data and cache (data, datacache), progress bars, optimizers, trackers,
and a tuning trial's side of its study (pruning).
"""
