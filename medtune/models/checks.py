"""The models part's recipe checks, registered with `medtune.config` (which knows no family)."""
from __future__ import annotations

from medtune.config import Recipe, register_check
from medtune.models.families import FAMILIES


@register_check
def family_problems(recipe: Recipe, check_files: bool = True) -> list[tuple[str, str]]:
    """``model.family`` against an inline config's ``model_type``: ``[(dotted key, message)]``.

    `check_files` is unused (nothing here reads files); it is the signature
    `medtune.config.register_check` asks for.
    """
    m = recipe.model
    if m.family and m.config and m.config.get("model_type") not in (
            m.family, getattr(FAMILIES.get(m.family), "model_type", m.family)):
        return [("model.config", f"model_type {m.config.get('model_type')!r} is not of family "
                                 f"{m.family} (leave model.family out: it is optional)")]
    return []
