"""Pipeline stages, one script each; run from the project root as `python -m stages.<name>`."""
