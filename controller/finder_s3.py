"""``controller.finder_s3:find``, a documented value of ``CUTOVER_TARGET_FINDER``; the finder
lives in ``controller.intake.finder_s3``."""

from controller.intake.finder_s3 import find

__all__ = ["find"]
