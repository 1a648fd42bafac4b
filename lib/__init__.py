"""Shared code of the pipeline: every stage in `stages/` is a thin script over these modules."""
