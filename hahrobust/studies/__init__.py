"""Studies: measurements that compose the metrics and the attacks into the paper's tables and beyond.

- :mod:`.paper_table`: Tables 1 and 2's four accuracies of one model (clean, noisy, ℓ∞, ℓ2).
- :mod:`.ablation`: Table 2's variants, trained from one preset and seed, then measured.
- :mod:`.corruption`: accuracy under CIFAR-10-C's common corruptions, with CE against a reference model.
- :mod:`.hebbian_sweep`: Amato et al. 2019's Table 2, a hebb-net trained per Hebbian/gradient/random layer string.
"""
