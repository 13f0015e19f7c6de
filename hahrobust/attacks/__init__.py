"""Adversarial attacks with verified results: AutoAttack, PGD, FMN (and DDN as an ℓ2 cross-check).

One module per attack family (:mod:`.pgd`, :mod:`.fmn`, :mod:`.ddn`, :mod:`.autoattack`), the norms they share
(:mod:`.norms`), the gradient an attack follows (:mod:`.gradients`: plain, BPDA, EOT), verification (:mod:`.verify`), and the runner that attacks a whole image set per batch with a
journal (:mod:`.run`). This package face only re-exports.
"""

from hahrobust.attacks.autoattack import AA_VERSIONS, AutoAttackFlag, autoattack
from hahrobust.attacks.ddn import DDNConfig, ddn
from hahrobust.attacks.fmn import FMNConfig, fmn
from hahrobust.attacks.gradients import GRADIENTS, GradientPath, adapt
from hahrobust.attacks.norms import (
    DEFAULT_EPS, NORMS, SYMBOLS, Norm, check_eps, check_norm, distances, format_eps, parse_eps, project, tolerance,
)
from hahrobust.attacks.pgd import PGDConfig, pgd
from hahrobust.attacks.run import (
    ATTACK_NORMS, ATTACKS, COLUMNS, MINIMUM_NORM, AttackName, AttackOutcome, check_attack, load_adversarial, recheck,
    run_attack, run_attack_images,
)
from hahrobust.attacks.verify import AttackVerificationError, Verified, verify

__all__ = [
    "AA_VERSIONS", "ATTACKS", "ATTACK_NORMS", "AttackName", "AttackOutcome", "GRADIENTS", "GradientPath", "adapt",
    "run_attack_images", "AutoAttackFlag", "AttackVerificationError", "COLUMNS", "DDNConfig",
    "DEFAULT_EPS", "FMNConfig", "MINIMUM_NORM", "NORMS", "Norm", "PGDConfig", "SYMBOLS", "Verified", "autoattack",
    "check_attack", "check_eps", "check_norm", "ddn", "distances", "fmn", "format_eps", "load_adversarial",
    "parse_eps", "pgd", "project", "recheck", "run_attack", "tolerance", "verify",
]
