"""Built-in suite executors beyond the core's local one."""
