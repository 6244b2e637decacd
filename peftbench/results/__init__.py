"""Reading records back: the results API (analysis: load_results, compare, floors, confounds),
paired tests (significance), the test predictions they compare (predictions), the report and its
notes, groups, HTML and plots, and the cache that makes a large report fast.
"""
