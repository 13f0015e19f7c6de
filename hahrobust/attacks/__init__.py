"""Adversarial attacks with verified results: AutoAttack, PGD, FMN, DDN, Square, and any attack registered.

One module per attack family (:mod:`.pgd`, :mod:`.fmn`, :mod:`.ddn`, :mod:`.autoattack`, :mod:`.square`), the
registry that names them (:mod:`.registry`: adding an attack is one module plus one registration line), the norms
they share (:mod:`.norms`), the gradient an attack follows (:mod:`.gradients`: plain, BPDA, EOT), verification
(:mod:`.verify`), the runner that attacks a whole image set per batch with a journal (:mod:`.run`), per-image
outcomes and summary rows (:mod:`.outcome`) and adversarial-example files (:mod:`.adversarial_files`). This package
face only re-exports.
"""

from hahrobust.attacks.adversarial_files import load_adversarial, recheck
from hahrobust.attacks.autoattack import AA_VERSIONS, AutoAttackConfig, AutoAttackFlag, autoattack
from hahrobust.attacks.ddn import DDNConfig, ddn
from hahrobust.attacks.fmn import FMNConfig, fmn
from hahrobust.attacks.gradients import GRADIENTS, GradientPath, adapt
from hahrobust.attacks.norms import (
    DEFAULT_EPS, NORMS, SYMBOLS, Norm, check_eps, check_norm, distances, format_eps, parse_eps, project, tolerance,
)
from hahrobust.attacks.outcome import COLUMNS, AttackOutcome
from hahrobust.attacks.pgd import PGDConfig, pgd
from hahrobust.attacks.registry import ATTACK_NORMS, REGISTRY, AttackSpec, check_attack, register
from hahrobust.attacks.run import run_attack, run_attack_images
from hahrobust.attacks.square import SquareConfig, square
from hahrobust.attacks.verify import AttackVerificationError, Verified, verify

__all__ = [
    "AA_VERSIONS", "ATTACK_NORMS", "AttackOutcome", "AttackSpec", "AttackVerificationError", "AutoAttackConfig",
    "AutoAttackFlag", "COLUMNS", "DDNConfig", "DEFAULT_EPS", "FMNConfig", "GRADIENTS", "GradientPath", "NORMS", "Norm",
    "PGDConfig", "REGISTRY", "SYMBOLS", "SquareConfig", "Verified", "adapt", "autoattack", "check_attack",
    "check_eps", "check_norm", "ddn", "distances", "fmn", "format_eps", "load_adversarial", "parse_eps", "pgd",
    "project", "recheck", "register", "run_attack", "run_attack_images", "square", "tolerance", "verify",
]
