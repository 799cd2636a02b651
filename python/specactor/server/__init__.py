"""``python -m specactor.server install|info|run``: the rollout server that this package carries.

The functions are in ``specactor.server_process``; this package is its command line.
"""
