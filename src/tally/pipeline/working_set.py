"""The batch's in-memory view of companies and users (pure).

Every event of a batch resolves its keys against the snapshot read at the
start of the batch plus what earlier events of the batch changed. An event
first resolves everything it needs (raising ``ProcessingFailed`` before it
changes anything), then changes the working set, so a failed event leaves
no trace. All changes are collected in ``changes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tally.jsontext import read_object
from tally.pipeline.identities import ProcessingFailed
from tally.pipeline.unit import Changes, EntityState, IndexKey, Snapshot

_PREFIXES = {"company": "comp", "user": "user"}


class Resolution:
    """What a key map points at: one entity, or none yet."""

    __slots__ = ("entity", "keys", "kind")

    def __init__(self, kind: str, keys: Mapping[str, str], entity: EntityState | None) -> None:
        self.kind = kind
        self.keys = keys
        self.entity = entity


class WorkingSet:
    def __init__(self, snapshot: Snapshot, new_id: Callable[[str], str]) -> None:
        self.snapshot = snapshot
        self.index: dict[IndexKey, str] = dict(snapshot.keys)
        self.entities: dict[str, EntityState] = {}
        self.changes = Changes()
        self._new_id = new_id
        self._touched: set[str] = set()
        for (_kind, _env, key, value), entity_id in snapshot.keys.items():
            if value != entity_id:  # an entity found by its own id has no such key
                self.entity(entity_id).keys.setdefault(key, value)

    def entity(self, entity_id: str) -> EntityState:
        state = self.entities.get(entity_id)
        if state is None:
            stored = self.snapshot.entities[entity_id]
            traits = read_object(stored.traits)
            state = self.entities[entity_id] = EntityState(
                stored.kind,
                stored.id,
                stored.environment_id,
                new=False,
                name=stored.name,
                traits=traits if isinstance(traits, dict) else {},
                billing_anchor=stored.billing_anchor,
            )
        return state

    def resolve(self, kind: str, env: str, keys: Mapping[str, str]) -> Resolution:
        """Find the one entity the keys point at; keys of two entities fail."""
        if not keys:
            raise ProcessingFailed(f"{kind} keys are empty; send at least one key")
        index = self.index
        found = {index[(kind, env, k, v)] for k, v in keys.items() if (kind, env, k, v) in index}
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:3])
            raise ProcessingFailed(
                f"the {kind} keys {dict(keys)} match {len(found)} different {kind} records "
                f"({shown}); send keys of one {kind} only"
            )
        return Resolution(kind, keys, self.entity(found.pop()) if found else None)

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
            entity = EntityState(kind, self._new_id(_PREFIXES[kind]), env, new=True, traits={})
            self.entities[entity.id] = entity
            self._touch(entity)
        for key, value in resolution.keys.items():
            if key == "id" and value == entity.id:
                continue  # the entity's own id is not a key
            if entity.keys.get(key) == value:
                continue
            old = entity.keys.get(key)
            if old is not None:
                self.index.pop((kind, env, key, old), None)
            entity.keys[key] = value
            entity.added_keys[key] = value
            entity.revision += 1
            self.index[(kind, env, key, value)] = entity.id
            self._touch(entity)
        if name is not None and name != entity.name:
            entity.name = name
            entity.name_given = True
            entity.dirty = True
            entity.revision += 1
            self._touch(entity)
        if traits:
            assert entity.traits is not None
            if any(k not in entity.traits or entity.traits[k] != v for k, v in traits.items()):
                entity.revision += 1
            entity.traits.update(traits)
            entity.trait_updates.update(traits)
            entity.dirty = True
            self._touch(entity)
        return entity

    def _touch(self, entity: EntityState) -> None:
        if entity.id not in self._touched:
            self._touched.add(entity.id)
            self.changes.entities.append(entity)

    def see(self, entity: EntityState, at: int) -> None:
        if entity.last_seen is None or at > entity.last_seen:
            entity.last_seen = at
            self._touch(entity)

    def link(self, env: str, company: EntityState, user: EntityState) -> None:
        self.changes.memberships.add((env, company.id, user.id))

    def features(self, env: str, subtype: str) -> list[str]:
        return list(self.snapshot.features.get((env, subtype), ()))
