"""Deprecated alias of :mod:`hahrobust.data.cifar10c` (the same module object, so patches apply to both).

Importing it warns; it will be removed after 2027-06-01. Import ``hahrobust.data.cifar10c`` instead."""

import sys
import warnings

from hahrobust.data import cifar10c

warnings.warn("hahrobust.cifar10c is deprecated and will be removed after 2027-06-01: import hahrobust.data.cifar10c",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = cifar10c
