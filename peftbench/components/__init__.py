"""Where components come from: the plugin manager that reads every distribution's ``peftbench``
entry points (plugins), the name -> component registries (registry), and which libraries a
component needs and which extra installs them (installed).
"""
