"""The batch's in-memory view of companies and users.

Every event of a batch resolves its keys here; reads go to storage in bulk at
the start of the batch and lazily for traits; writes are collected and
handed back once (``Changes``). An event first resolves everything it needs
(raising ``ProcessingFailed`` before changing anything), then changes the
working set, so a failed event leaves no trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from tally.pipeline.identities import ProcessingFailed
from tally.pipeline.unit import Changes, EntityState, KeyRef, UnitOfWork


class Resolution:
    """What a key map points at: one entity, or none yet."""

    __slots__ = ("entity", "keys", "kind")

    def __init__(self, kind: str, keys: Mapping[str, str], entity: EntityState | None) -> None:
        self.kind = kind
        self.keys = keys
        self.entity = entity


class WorkingSet:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.index: dict[tuple[str, str, str, str], str] = {}  # kind, env, key, value → id
        self.entities: dict[str, EntityState] = {}
        self.changes = Changes()
        self._touched: set[str] = set()

    def prefetch(self, kind: str, refs: Iterable[KeyRef]) -> None:
        """Look up many key references in one go."""
        wanted = {ref for ref in refs if (kind, *ref) not in self.index}
        if not wanted:
            return
        for (env, key, value), entity_id in self.uow.lookup_keys(kind, wanted).items():
            self.index[(kind, env, key, value)] = entity_id
            entity = self._entity(kind, entity_id, env)
            entity.keys.setdefault(key, value)

    def _entity(self, kind: str, entity_id: str, env: str) -> EntityState:
        entity = self.entities.get(entity_id)
        if entity is None:
            entity = self.entities[entity_id] = EntityState(kind, entity_id, env, new=False)
        return entity

    def resolve(self, kind: str, env: str, keys: Mapping[str, str]) -> Resolution:
        """Find the one entity the keys point at; keys of two entities fail."""
        if not keys:
            raise ProcessingFailed(f"{kind} keys are empty; send at least one key")
        self.prefetch(kind, [(env, k, v) for k, v in keys.items()])
        found = {
            self.index[(kind, env, k, v)]
            for k, v in keys.items()
            if (kind, env, k, v) in self.index
        }
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:3])
            raise ProcessingFailed(
                f"the {kind} keys {dict(keys)} match {len(found)} different {kind} records "
                f"({shown}); send keys of one {kind} only"
            )
        entity = self.entities[found.pop()] if found else None
        return Resolution(kind, keys, entity)

    def upsert(
        self,
        resolution: Resolution,
        env: str,
        name: str | None = None,
        traits: Mapping[str, Any] | None = None,
    ) -> EntityState:
        """Create the entity when none matched, add new keys, set the name when
        given and merge traits (top-level keys replace)."""
        kind = resolution.kind
        entity = resolution.entity
        if entity is None:
            entity = EntityState(kind, self.uow.new_id(kind), env, new=True, traits={}, loaded=True)
            self.entities[entity.id] = entity
            self._touched.add(entity.id)
            self.changes.entities.append(entity)
        for key, value in resolution.keys.items():
            if key == "id" and value == entity.id:
                continue  # the entity's own id is not a key
            if entity.keys.get(key) == value and (kind, env, key, value) in self.index:
                continue
            old = entity.keys.get(key)
            if old is not None and old != value:
                self.index.pop((kind, env, key, old), None)
            entity.keys[key] = value
            entity.added_keys[key] = value
            self.index[(kind, env, key, value)] = entity.id
            self._touch(entity)
        if name is not None or traits:
            self._load(entity)
            if name is not None and name != entity.name:
                entity.name = name
                entity.dirty = True
            if traits:
                assert entity.traits is not None
                entity.traits.update(traits)
                entity.dirty = True
            self._touch(entity)
        return entity

    def _load(self, entity: EntityState) -> None:
        if entity.loaded:
            return
        name, traits_json = self.uow.load_entity(entity.kind, entity.id)
        traits = msgspec.json.decode(traits_json) if traits_json else {}
        entity.name = name
        entity.traits = traits if isinstance(traits, dict) else {}
        entity.loaded = True

    def _touch(self, entity: EntityState) -> None:
        if entity.id in self._touched:
            return
        self._touched.add(entity.id)
        self.changes.entities.append(entity)

    def see(self, entity: EntityState, at: int) -> None:
        if entity.last_seen is None or at > entity.last_seen:
            entity.last_seen = at
            self._touch(entity)

    def link(self, env: str, company: EntityState, user: EntityState) -> None:
        self.changes.memberships.add((env, company.id, user.id))
