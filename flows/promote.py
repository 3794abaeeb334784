"""Prefect flow `promote`: move alias `champion` of a registered model to its challenger when
the rule in components/registry.py allows it (the decision and reason become version tags).

    prefect deployment run promote/promote -p model_name=fsrfer --watch
"""

from __future__ import annotations

from prefect import flow

from flows.pipeline import project_root, promote_task


@flow(name="promote", log_prints=True)
def promote(model_name: str = "fsrfer", version: int | None = None, project_dir: str | None = None) -> dict:
    """Apply the promotion rule to `model_name`'s `version` (default: its challenger); returns the decision."""
    return promote_task(project_root(project_dir), model_name, version)


if __name__ == "__main__":
    print(promote())
