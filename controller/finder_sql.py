"""``controller.finder_sql:find``, a documented value of ``CUTOVER_TARGET_FINDER``; the finder
lives in ``controller.intake.finder_sql``."""

from controller.intake.finder_sql import find

__all__ = ["find"]
