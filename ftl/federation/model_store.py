"""Where a served party keeps the model shards its peers trained, across restarts.

Under ``model_dir``, a folder per peer identity holds one JSON file per model
shard (written by the party's ``export_model``). A model trained on preprocessed
rows is kept in a folder of its own with the fitted transformers it needs, in
pipeline order (``t00-<id>.json``, ``t01-<id>.json``, ..., ``model.json``). At
start-up the server reloads every peer's shards into that peer's view, so that a
restarted host still serves predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ftl.federation.views import ServedParty, through

__all__ = ["ModelDirectory"]

log = logging.getLogger("ftl.serve")


class ModelDirectory:
    """The shards kept under one folder, per peer identity.

    Parameters
    ----------
    root : path
        The folder (created when the first shard is kept).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def reload(self, identity: str, view: ServedParty) -> None:
        """Load the shards kept for peer ``identity`` into its view (at start-up);
        a shard that cannot be read is logged and skipped."""
        folder = self.root / identity
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            try:
                if path.suffix == ".json":
                    view.import_model(path)
                elif path.is_dir():  # a model on preprocessed rows: transformers first
                    party = view
                    for file in sorted(path.glob("t*-*.json")):
                        transformer_id = file.stem.partition("-")[2]
                        if transformer_id not in party.transformer_ids():
                            party.import_transformer(file)
                        party = party.derive(transformer_id)
                    party.import_model(path / "model.json")
            except ValueError as exc:
                log.error("cannot reload model shard %s: %s", path, exc)

    def keep(
        self, identity: str, view: ServedParty, party: ServedParty, path: tuple[str, ...]
    ) -> None:
        """Write the model shards of ``party`` (``view`` seen through ``path``) that
        are not kept yet.

        A model trained on preprocessed rows is kept with the fitted transformers
        it needs, in pipeline order, in a folder of its own.
        """
        folder = self.root / identity
        folder.mkdir(parents=True, exist_ok=True)
        for model_id in party.model_ids():
            if not path:
                target = folder / f"{model_id}.json"
                if not target.exists():
                    party.export_model(model_id, target)
                    log.info("kept model shard %s for %s", model_id, identity)
                continue
            target = folder / model_id
            if target.exists():
                continue
            target.mkdir()
            for i, transformer_id in enumerate(path):
                holder = through(view, path[:i])
                holder.export_transformer(
                    transformer_id, target / f"t{i:02d}-{transformer_id}.json"
                )
            party.export_model(model_id, target / "model.json")
            log.info("kept model shard %s (on preprocessed rows) for %s", model_id, identity)
