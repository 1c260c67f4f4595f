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

from tally.batch import Changes, EntityState, IndexKey, ProcessingFailed, Snapshot
from tally.effects.billing import STRIPE_CUSTOMER_KEY
from tally.jsontext import read_object

_PREFIXES = {"company": "comp", "user": "user"}
_UPSERT_ROUTES = {"company": "POST /companies", "user": "POST /users"}

# What an upsert does with the keys it was given (README, "Entity keys"):
REWRITE = "rewrite"  # the secret-key REST upserts: a new value replaces the old
ADD = "add"  # identify: key names the entity lacks are added, none is changed
CREATE = "create"  # track: keys are written only for an entity it creates


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
            state = self.entities[entity_id] = EntityState(
                stored.kind,
                stored.id,
                stored.environment_id,
                new=False,
                name=stored.name,
                billing_anchor=stored.billing_anchor,
                stored_traits=stored.traits,
            )
        return state

    @staticmethod
    def traits(entity: EntityState) -> dict[str, Any]:
        """The entity's traits, read from their stored text on first use (a
        track event never needs them)."""
        if entity.traits is None:
            traits = read_object(entity.stored_traits)
            entity.traits = traits if isinstance(traits, dict) else {}
        return entity.traits

    def resolve(self, kind: str, env: str, keys: Mapping[str, str]) -> Resolution:
        """Find the one entity the keys point at; keys of two entities fail."""
        if not keys:
            raise ProcessingFailed(f"{kind} keys are empty; send at least one key")
        index = self.index
        found: set[str] = set()
        for k, v in keys.items():
            entity_id = index.get((kind, env, k, v))
            if entity_id is not None:
                found.add(entity_id)
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:3])
            raise ProcessingFailed(
                f"the {kind} keys {dict(keys)} match {len(found)} different {kind} records "
                f"({shown}); send keys of one {kind} only"
            )
        return Resolution(kind, keys, self.entity(found.pop()) if found else None)

    def check_keys(self, resolution: Resolution, *, adds: bool, secret: bool) -> None:
        """Refuse an event that would change the value of a key its entity
        holds, or, sent without a secret key, set a company's billing key.
        ``adds``: whether the event adds key names to an entity it finds."""
        entity = resolution.entity
        held = entity.keys if entity is not None else {}
        added = []
        for key, value in resolution.keys.items():
            if entity is not None and key == "id" and value == entity.id:
                continue  # the entity's own id is not a key
            old = held.get(key)
            if old is None:
                added.append(key)
            elif old != value:
                assert entity is not None
                raise ProcessingFailed(
                    f"the {entity.kind} {entity.id} already has another value for the key "
                    f"{key!r}; an event never changes a key's value (a secret key can, "
                    f"with {_UPSERT_ROUTES[entity.kind]})"
                )
        if entity is not None and not adds:
            return  # nothing is added to an entity found
        if resolution.kind == "company" and STRIPE_CUSTOMER_KEY in added and not secret:
            raise ProcessingFailed(
                f"only a secret API key may set the billing key {STRIPE_CUSTOMER_KEY!r}; "
                "this event was sent with a publishable key"
            )

    def upsert(
        self,
        resolution: Resolution,
        env: str,
        name: str | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        keys: str = REWRITE,
    ) -> EntityState:
        """Create the entity when none matched, write its keys as ``keys``
        says (``REWRITE``, ``ADD`` or ``CREATE``), set the name when given and
        merge traits (top-level keys replace). An event checks its keys
        (``check_keys``) before it changes anything."""
        kind = resolution.kind
        entity = resolution.entity
        if entity is None:
            entity = EntityState(kind, self._new_id(_PREFIXES[kind]), env, new=True, traits={})
            self.entities[entity.id] = entity
            self._touch(entity)
        elif keys == CREATE:
            return self._set(entity, name, traits)
        else:
            entity.replaces_keys = entity.replaces_keys or keys == REWRITE
        for key, value in resolution.keys.items():
            if key == "id" and value == entity.id:
                continue  # the entity's own id is not a key
            if entity.keys.get(key) == value:
                continue
            old = entity.keys.get(key)
            if old is not None:
                if keys != REWRITE:
                    continue  # never changed by an event (``check_keys`` refused it)
                self.index.pop((kind, env, key, old), None)
            entity.keys[key] = value
            entity.added_keys[key] = value
            entity.revision += 1
            self.index[(kind, env, key, value)] = entity.id
            self._touch(entity)
        return self._set(entity, name, traits)

    def _set(
        self, entity: EntityState, name: str | None, traits: Mapping[str, Any] | None
    ) -> EntityState:
        """Set the name when given and merge traits (top-level keys replace)."""
        if name is not None and name != entity.name:
            entity.name = name
            entity.name_given = True
            entity.dirty = True
            entity.revision += 1
            self._touch(entity)
        if traits:
            held = self.traits(entity)
            if any(k not in held or held[k] != v for k, v in traits.items()):
                entity.revision += 1
            held.update(traits)
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
        if (company.id, user.id) not in self.snapshot.memberships:
            self.changes.memberships.add((env, company.id, user.id))

    def features(self, env: str, subtype: str) -> list[str]:
        return list(self.snapshot.features.get((env, subtype), ()))
