"""The training pieces beside the recipe (`ept.training.recipe`): the run folder's checkpoints
(`checkpointer`) and the metric log (`metric_log`)."""
