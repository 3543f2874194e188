"""The training pieces beside the recipe (`ept.train`): the run folder's checkpoints
(`checkpointer`) and the metric log (`metric_log`)."""
