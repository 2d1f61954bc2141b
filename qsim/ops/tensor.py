"""(placeholder, filled by the op-library work)"""
from .registry import register  # noqa: F401
