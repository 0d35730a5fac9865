"""NodeCards: this node's own (re-signed whenever its content changes) and received ones (validated).

A received card is self-certifying: its node_id is the hash of its public key and it is signed
by that key (`check_card`). Its fields are then validated like any wire record, so a peer can
never put an unbounded list, a bad address or a far-future timestamp into another node's view.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated

import grpc
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from node.config import NODE_ID, NODE_NAME, HostPort
from node.rpc.agora.v1 import node_pb2
from node.security.envelope import EnvelopeError, check_card, now_ms, sign_card
from node.security.identity import NodeIdentity

TaskName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
KNOWN_ROLES = (node_pb2.ROLE_TEACHER, node_pb2.ROLE_STUDENT)


class CardFields(BaseModel):
    """The checks a received NodeCard's fields must pass (its signature is checked apart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(pattern=rf"^{NODE_ID.pattern}$")
    name: str = Field(pattern=rf"^{NODE_NAME.pattern}$")
    address: HostPort
    roles: list[int] = Field(min_length=1, max_length=len(KNOWN_ROLES))
    teaches: list[TaskName] = Field(max_length=64)
    learns: list[TaskName] = Field(max_length=64)
    model_id: str = Field(max_length=256)
    software_version: str = Field(max_length=32)
    epsilon_left: float = Field(ge=0)
    issued_at_unix_ms: int = Field(gt=0)

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(role not in KNOWN_ROLES for role in value):
            raise ValueError("roles must be distinct and each ROLE_TEACHER or ROLE_STUDENT")
        return value

    @field_validator("epsilon_left")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


def validate_card(card: node_pb2.NodeCard, max_skew_ms: int, at_ms: int | None = None) -> None:
    """EnvelopeError (reason bad_card) unless the card is self-signed, well-formed and not from the future."""
    check_card(card)
    try:
        CardFields(
            node_id=card.node_id,
            name=card.name,
            address=card.address,
            roles=list(card.roles),
            teaches=list(card.teaches),
            learns=list(card.learns),
            model_id=card.model.id,
            software_version=card.software_version,
            epsilon_left=card.epsilon_left,
            issued_at_unix_ms=card.issued_at_unix_ms,
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise EnvelopeError(
            "bad_card",
            f"the card of {card.node_id[:12]}… is invalid: {field}: {str(first['msg']).removeprefix('Value error, ')}",
            grpc.StatusCode.INVALID_ARGUMENT,
        ) from None
    ahead_ms = card.issued_at_unix_ms - (now_ms() if at_ms is None else at_ms)
    if ahead_ms > max_skew_ms:
        raise EnvelopeError(
            "bad_card",
            f"the card of {card.node_id[:12]}… was issued {ahead_ms / 1000:.1f}s in the future "
            f"(allowed clock skew: {max_skew_ms / 1000:g}s)",
            grpc.StatusCode.INVALID_ARGUMENT,
        )


def _without_volatile(card: node_pb2.NodeCard) -> bytes:
    stable = node_pb2.NodeCard()
    stable.CopyFrom(card)
    for name in ("load", "issued_at_unix_ms", "signature", "node_id", "public_key"):
        stable.ClearField(name)
    return stable.SerializeToString(deterministic=True)


class CardIssuer:
    """This node's signed card. ``current()`` re-issues it when its content changed, or when only
    its load changed and the card is older than ``load_refresh_s`` (load moves all the time and
    every new card travels the whole network)."""

    def __init__(
        self,
        identity: NodeIdentity,
        content: Callable[[], node_pb2.NodeCard],
        load_refresh_s: float,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._identity = identity
        self._content = content
        self._load_refresh_ms = int(load_refresh_s * 1000)
        self._clock_ms = clock_ms
        self._card: node_pb2.NodeCard | None = None
        self._stable = b""
        self._not_before_ms = 0

    def current(self) -> node_pb2.NodeCard:
        card = self._content()
        stable = _without_volatile(card)
        now = self._clock_ms()
        old = self._card
        if (
            old is not None
            and stable == self._stable
            and (card.load == old.load or now - old.issued_at_unix_ms < self._load_refresh_ms)
        ):
            return old
        card.issued_at_unix_ms = max(now, self._not_before_ms, old.issued_at_unix_ms + 1 if old else 0)
        sign_card(card, self._identity)
        self._card, self._stable = card, stable
        return card

    def supersede(self, issued_at_unix_ms: int) -> None:
        """A peer holds a card of ours issued at this time (from before a restart, with a clock
        that has since gone back): the next card must be newer, or peers would ignore it."""
        if self._card is None or self._card.issued_at_unix_ms <= issued_at_unix_ms:
            self._not_before_ms = max(self._not_before_ms, issued_at_unix_ms + 1)
            self._card = None
