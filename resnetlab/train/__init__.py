"""Training: `fit` (loop.py) checks the settings once, locks the run's folder and runs a Trainer.

- loop.py: fit, the public way in (a TrainConfig, or a model and data in memory);
- config.py: TrainConfig and check_config, the one check of the settings; recipes.py: the recipes;
- setup.py: `set_up`, the run's parts in named steps (checkpoint to resume, recipe, data, model,
  the Plan of policy.py, loaders, optimiser, state), making the Trainer;
- trainer.py: the Trainer, read top to bottom: epochs, reads of the step's tallies, evaluation,
  logs, checkpoints, the summary; step.py: one optimiser step (lr, update, weight average, tallies);
- state.py: RunState, what a checkpoint keeps; checkpoint.py, resume.py, rundir.py: the checkpoint
  file, resuming it and the run's folder; rundata.py: the run's data;
- evaluate.py: evaluation (and `resnetlab eval`); report.py: the run's description, epoch rows and
  summary; logs.py: metrics and step logs, progress, curves; callbacks.py: the user's code at the
  trainer's events; finetune.py: init-from, freezing, parameter groups; distributed.py: torchrun.

Nothing is imported here: import from the module that holds a name (resnetlab.fit is loop.fit).
"""
