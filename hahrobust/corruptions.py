"""Compatibility alias: this module is :mod:`hahrobust.data.corruptions` (same object, so patches apply to both)."""

import sys

from hahrobust.data import corruptions

sys.modules[__name__] = corruptions
