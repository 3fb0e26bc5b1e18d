"""Run plumbing shared by the command-line tasks: config, logging, checkpoints, errors."""
