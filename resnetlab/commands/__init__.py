"""One module per group of subcommands; each exposes register(subparsers), and cli.py lists them.

models.py (models, summary), data.py (data), train.py (train, eval), infer.py (predict,
explain), deploy.py (export, quantize, bench), experiment.py (the studies)."""
