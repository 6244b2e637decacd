"""First-party peftbench plugins, registered through the `peftbench` entry-point group."""
