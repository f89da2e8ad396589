"""Calibration and power of the drift tests; the embedding drift power target.

    python benchmarks/bench_drift.py [--trials 200]

Table 1: each test's false-alarm rate on reference-vs-reference splits (same distribution) and its
power on planted shifts at alpha = 0.05: a 0.25 SD mean shift in 4 of 32 embedding dimensions, a 10%
change in token frequencies, a length shift of 0.25 SD. Table 2: the issue's target setting (500 vs 500,
32 Gaussian dims, 0.1 SD shift in 4 dims; and 0.25 SD), with seconds per test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness import stats

ALPHA = 0.05


def embeddings(rng, n, shift):
    rows = rng.normal(size=(n, 32))
    rows[:, :4] += shift
    return rows


def token_rows(rng, n, change):
    p = np.linspace(1, 3, 30)
    p[:10] *= 1 + change  # a 10% change of the frequencies of a third of the vocabulary
    counts = np.stack([rng.multinomial(40, p / p.sum()) for _ in range(n)])  # (n, 30) per-example counts
    return counts.astype(float)


TESTS = {
    "hotelling_t2 (embeddings)": (lambda x, y: stats.hotelling_t2(x, y).p_value, embeddings, 0.25),
    "mmd_rbf 100 perms (embeddings)": (lambda x, y: stats.mmd_rbf(x, y, permutations=100).p_value, embeddings, 0.25),
    "ks bonferroni (embeddings)": (
        lambda x, y: min(1.0, 32 * min(stats.ks_test(x[:, j], y[:, j]).p_value for j in range(32))),
        embeddings,
        0.25,
    ),
    "chi_square_permutation (tokens)": (
        lambda x, y: stats.chi_square_permutation(x, y, permutations=100).p_value,
        token_rows,
        0.10,
    ),
    "chi_square pooled (tokens)": (lambda x, y: stats.chi_square(x.sum(0), y.sum(0)).p_value, token_rows, 0.10),
    "ks (length)": (
        lambda x, y: stats.ks_test(x, y).p_value,
        lambda rng, n, s: rng.normal(20 + 5 * s, 5, size=n),
        0.25,
    ),
    "wasserstein 100 perms (length)": (
        lambda x, y: stats.wasserstein(x, y, permutations=100).p_value,
        lambda rng, n, s: rng.normal(20 + 5 * s, 5, size=n),
        0.25,
    ),
}


def rate(test, sampler, shift, n, trials, seed):
    rng = np.random.default_rng(seed)
    hits, seconds = 0, 0.0
    for _ in range(trials):
        x, y = sampler(rng, n, 0.0), sampler(rng, n, shift)
        started = time.perf_counter()
        hits += test(x, y) <= ALPHA
        seconds += time.perf_counter() - started
    value = hits / trials
    return value, np.sqrt(max(value * (1 - value), 1e-12) / trials), seconds / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--target-trials", type=int, default=2000, help="trials of the fast Hotelling test in table 2")
    parser.add_argument("--n", type=int, default=500, help="reference and current sample size (table 1)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"Table 1: {args.trials} trials, n={args.n} per sample, alpha={ALPHA}")
    print(f"{'test':36s} {'false alarm':>14s} {'shift':>6s} {'power':>14s} {'s/test':>8s}")
    for name, (test, sampler, shift) in TESTS.items():
        null, null_se, _ = rate(test, sampler, 0.0, args.n, args.trials, seed=1)
        power, power_se, seconds = rate(test, sampler, shift, args.n, args.trials, seed=2)
        print(f"{name:36s} {null:7.3f}+-{null_se:.3f} {shift:6.2f} {power:7.3f}+-{power_se:.3f} {seconds:8.4f}")
    print("\nTable 2: embedding drift target (500 vs 500, 32 dims, shift in 4 dims); target power >= 0.28 at 0.1 SD")
    print(f"{'test':36s} {'false alarm':>14s} {'power 0.1':>14s} {'power 0.25':>14s} {'s/test':>8s}")
    for name, trials in (
        ("hotelling_t2 (embeddings)", args.target_trials),
        ("mmd_rbf 100 perms (embeddings)", args.trials),
    ):
        test = TESTS[name][0]
        null, null_se, _ = rate(test, embeddings, 0.0, 500, trials, seed=3)
        small, small_se, seconds = rate(test, embeddings, 0.1, 500, trials, seed=4)
        large, large_se, _ = rate(test, embeddings, 0.25, 500, trials, seed=5)
        print(f"{name + f' [{trials}]':36s} {null:7.3f}+-{null_se:.3f} {small:7.3f}+-{small_se:.3f} {large:7.3f}+-{large_se:.3f} "
              f"{seconds:8.4f}")  # fmt: skip
    theory = stats.hotelling_power(500, 500, 32, float(np.sqrt(4 * 0.1**2)))
    print(f"hotelling_t2 closed-form power at 0.1 SD (noncentral F): {theory:.3f}")


if __name__ == "__main__":
    main()
