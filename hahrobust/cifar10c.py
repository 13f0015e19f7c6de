"""Compatibility alias: this module is :mod:`hahrobust.data.cifar10c` (same object, so patches apply to both)."""

import sys

from hahrobust.data import cifar10c

sys.modules[__name__] = cifar10c
