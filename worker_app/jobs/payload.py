"""What a job's payload may be, and checking it against the task's model.

A task that declares ``payload_model`` (a pydantic model) receives one instance of it; the payload
is validated where it is enqueued, again where it runs, and where a dead letter is replayed with
a corrected payload. Tasks without a model take keyword arguments as given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from worker_app.errors import InvalidPayload

#: What a job's payload may be: its model, a mapping of fields, or nothing.
Payload = BaseModel | Mapping[str, Any] | None


def kwargs_of(target: Any, payload: Any, index: int | None = None) -> dict[str, Any]:
    """The keyword arguments a payload becomes, validated when the task declares a model.

    Raises:
        InvalidPayload: the payload does not match the model (``index`` names it in a batch).
    """
    model = getattr(target, "payload_model", None)
    if model is not None:
        data = payload if isinstance(payload, BaseModel) else dict(payload or {})
        try:
            if isinstance(data, BaseModel):
                validated = validate_payload(model, (data,), {})
            else:
                validated = validate_payload(model, (), data)
        except InvalidPayload as exc:
            if index is None:
                raise
            raise InvalidPayload(f"payload #{index}: {exc}", exc.errors) from None
        return validated.model_dump(mode="json")
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    return dict(payload or {})


def validate_payload(
    model: type[BaseModel], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> BaseModel:
    """Build ``model`` from a task's arguments: one model/dict argument, or keyword fields.

    Raises:
        InvalidPayload: the arguments do not form a valid payload; lists every field error.
    """
    if len(args) == 1 and not kwargs and isinstance(args[0], model):
        return args[0]
    if len(args) == 1 and not kwargs and isinstance(args[0], Mapping):
        data: Any = args[0]
    elif not args:
        data = dict(kwargs)
    else:
        raise InvalidPayload(
            f"payload of {model.__name__} must be keyword fields or one object, "
            f"got {len(args)} positional argument(s)"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            f"{'.'.join(str(p) for p in err['loc']) or '(payload)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise InvalidPayload(f"invalid {model.__name__}: " + "; ".join(errors), errors) from None
