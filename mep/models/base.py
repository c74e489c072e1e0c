"""Base model and bounded scalar types shared by every ETSI model.

Every model serialises by alias (``_links``), accepts population by field
name, ignores unknown members (the ETSI examples carry members such as
``serName`` on TrafficRule that the schema does not list) and bounds every
string and list, so no request can make the platform hold unbounded data.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

__all__ = ["EtsiModel", "Int32", "Bool", "Id", "Text", "Uri", "MAX_LIST", "bounded_list"]

MAX_LIST = 256  # longest list accepted in any ETSI body


class EtsiModel(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        frozen=True,
        str_max_length=4096,
    )

    def to_json(self) -> dict[str, Any]:
        """The wire form: aliases, enums as strings, absent optionals omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json_text(self) -> bytes:
        """``to_json()`` as compact JSON text (UTF-8), serialised in one step."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
Bool = StrictBool
Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Text = Annotated[StrictStr, Field(max_length=1024)]
Uri = Annotated[StrictStr, Field(min_length=1, max_length=2048)]


def bounded_list(max_items: int = MAX_LIST) -> Any:
    return Field(default=None, max_length=max_items)
