"""Run plumbing above ``training``: config composition, checkpoint lookup, run setup and records,
the one-line error boundary. Used by ``cli`` and ``api``; knows Hydra, never the other way round.
"""
