"""Deprecated alias of :mod:`hahrobust.data.corruptions` (the same module object, so patches apply to both).

Importing it warns; it will be removed after 2027-06-01. Import ``hahrobust.data.corruptions`` instead."""

import sys
import warnings

from hahrobust.data import corruptions

warnings.warn("hahrobust.corruptions is deprecated and will be removed after 2027-06-01: import hahrobust.data.corruptions",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = corruptions
