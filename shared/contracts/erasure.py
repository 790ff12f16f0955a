"""The erasure request, version 1: the journey service asks every other service to erase a
customer (GDPR art. 17) after it erased them itself.

Keyed ``workspace_id:customer_id`` like the customer's events, so the requests for one customer
stay in order. ``erasure_id`` is random, not derived from the customer: it is the only handle the
services' erasure logs keep, and those logs must not lead back to the person.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contracts.events import cloudevent_headers

ERASURE_TYPE = "ciclo.customer.erasure_requested"

Subject = Annotated[str, Field(min_length=1, max_length=210)]


def new_erasure_id() -> str:
    """A fresh erasure id (``era_`` and 32 hex digits), unrelated to the customer."""
    return "era_" + secrets.token_hex(16)


class ErasureRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    erasure_id: str = Field(min_length=1, max_length=40)
    workspace_id: str = Field(min_length=1, max_length=64)
    customer_id: Subject = Field(
        description="The customer as the services store them (``anon:<id>`` for an anonymous one).",
    )
    aliases: list[Subject] = Field(
        default_factory=list,
        description="Ids merged into the customer (identity resolution): erased as well, since "
        "a service may hold data under an id the customer had before the merge.",
    )
    requested_at: AwareDatetime

    @property
    def key(self) -> str:
        return f"{self.workspace_id}:{self.customer_id}"

    @property
    def subjects(self) -> list[str]:
        """The customer id and every alias, once each."""
        return list(dict.fromkeys([self.customer_id, *self.aliases]))

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes) -> ErasureRequest:
        return cls.model_validate_json(data)

    def headers(self) -> dict[str, str]:
        return cloudevent_headers(
            ce_id=self.erasure_id,
            ce_type=ERASURE_TYPE,
            ce_source=f"/workspaces/{self.workspace_id}/journey",
            ce_time=self.requested_at,
        )
