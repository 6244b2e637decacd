"""Many runs: a suite file expanded into planned runs (plan), tuning with an equal budget
(tuning, tuned), and the built-in executor's warm workers (local_executor, workers).
"""
