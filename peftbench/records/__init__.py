"""What a run leaves behind: the record's schema and reading it back (record), and the files
of a results folder written so that no reader sees half of one (files).
"""
