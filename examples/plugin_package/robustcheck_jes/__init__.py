"""An example third-party robustcheck plugin (see plugin.py)."""
