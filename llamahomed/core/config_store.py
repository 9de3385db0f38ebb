"""Live configuration: validated partial updates that persist atomically and apply at once."""

from __future__ import annotations

import os
import time
from typing import Any

import structlog
import tomli_w
from pydantic import BaseModel, ValidationError

from llamahomed.core.errors import StartupError, ValidationFailed
from llamahomed.core.files import atomic_write
from llamahomed.core.settings import (
    ModelSettings,
    RateLimitSettings,
    Settings,
    SystemSettings,
    check_consistency,
    read_config_file,
)

log = structlog.get_logger(__name__)

SECTIONS: dict[str, type[BaseModel]] = {"model_settings": ModelSettings,
                                        "system_settings": SystemSettings,
                                        "rate_limits": RateLimitSettings}


def _validation_details(exc: ValidationError, section: str) -> dict[str, Any]:
    errors = [{"field": ".".join([section, *(str(p) for p in err["loc"])]), "message": err["msg"]}
              for err in exc.errors()]
    return {"errors": errors}


def _drop_none(value: Any) -> Any:
    """TOML has no null: an unset nested field (a tier's ``rpm: null``) is left out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


class ConfigStore:
    """Holds the current :class:`Settings`; handlers read ``store.settings`` on every request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def public(self) -> dict[str, Any]:
        """The guide's config document."""
        return {name: getattr(self.settings, name).model_dump(mode="json") for name in SECTIONS}

    def update(self, patch: Any) -> dict[str, Any]:
        """Merge a partial update, validate it, persist it, then make it current."""
        if not isinstance(patch, dict):
            raise ValidationFailed("the config body must be a JSON object",
                                   details={"errors": [{"field": "", "message": "not an object"}]})
        unknown = sorted(set(patch) - set(SECTIONS))
        if unknown:
            raise ValidationFailed(
                f"unknown config section(s): {', '.join(unknown)}",
                details={"errors": [{"field": k, "message": "unknown section"} for k in unknown]})
        new_sections: dict[str, BaseModel] = {}
        for name, changes in patch.items():
            if not isinstance(changes, dict):
                raise ValidationFailed(f"{name} must be an object",
                                       details={"errors": [{"field": name, "message": "not an object"}]})
            current = getattr(self.settings, name).model_dump()
            try:
                new_sections[name] = SECTIONS[name].model_validate({**current, **changes})
            except ValidationError as exc:
                raise ValidationFailed(f"invalid value in {name}",
                                       details=_validation_details(exc, name)) from exc
        sections = {name: new_sections.get(name, getattr(self.settings, name)) for name in SECTIONS}
        try:
            check_consistency(sections["model_settings"], sections["system_settings"])
        except ValueError as exc:
            raise ValidationFailed(str(exc), details={"errors": [
                {"field": "model_settings.max_tokens", "message": str(exc)}]}) from exc
        self._persist(patch, new_sections)
        self.settings = self.settings.model_copy(update=new_sections)
        return self.public()

    def _persist(self, patch: dict[str, Any], validated: dict[str, BaseModel]) -> None:
        """Write the changed keys with their validated values (``"8"`` is stored as 8)."""
        path = self.settings.config_file
        try:
            document = read_config_file(path)
        except StartupError as exc:  # keep the broken file, write a good one in its place
            kept = path.with_name(f"{path.name}.broken-{int(time.time())}")
            os.replace(path, kept)
            log.warning("config_file_unreadable", path=str(path), kept_as=str(kept),
                        error=str(exc))
            document = {name: _drop_none(getattr(self.settings, name).model_dump(mode="json"))
                        for name in SECTIONS}
        for name, changes in patch.items():
            values = validated[name].model_dump(mode="json")
            section = dict(document.get(name, {}))
            section.update({k: _drop_none(values[k]) for k, v in changes.items()
                            if v is not None and values.get(k) is not None})
            for key in [k for k, v in changes.items() if v is None or values.get(k) is None]:
                section.pop(key, None)
            document[name] = section
        atomic_write(path, tomli_w.dumps(document).encode())
