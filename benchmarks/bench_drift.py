"""Calibration and power of the drift tests; the embedding drift power target; the verdicts on real text.

    python benchmarks/bench_drift.py [--trials 200] [--real-trials 50] [--wikitext ../shared/data/wikitext-2/valid.txt]

Table 1: each test's false-alarm rate on reference-vs-reference splits (same distribution) and its
power on planted shifts at alpha = 0.05: a 0.25 SD mean shift in 4 of 32 embedding dimensions, a 10%
change in token frequencies, a length shift of 0.25 SD. Table 2: the issue's target setting (500 vs 500,
32 Gaussian dims, 0.1 SD shift in 4 dims; and 0.25 SD), with seconds per test.

Table 3 (real data, needs the minilm extra and a WikiText-2 file): the drift verdicts of the default
MonitorConfig on MiniLM embeddings (pooled and normalised as the model declares) of WikiText-2 sentences, per
embedding test and sample size: reference vs reference (disjoint random samples of the sentences: the share
of ``fail`` is the false-alarm rate, the share of ``inconclusive`` what a team would see on a night without
drift) and reference vs a mix with CPython's documentation paragraphs at 5, 10 and 25% (the share of
``fail`` is the power). The embeddings are computed once per run and cached under reports/.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import time
from pathlib import Path

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


SIZES = (50, 200, 500)  # examples per profile in table 3
MIXES = (0.05, 0.10, 0.25)  # share of documentation paragraphs in the contaminated current data
ROOT = Path(__file__).resolve().parent.parent


def cached_embeddings(texts: list[str]) -> np.ndarray:
    """MiniLM embeddings (N, 384) of ``texts``, computed once and kept in reports/ under a hash of the texts."""
    from harness.monitoring.profile import text_embeddings

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = ROOT / "reports" / f"bench_drift_minilm_{key}.npy"
    if path.is_file():
        return np.load(path)
    rows = text_embeddings("minilm", texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, rows)
    return rows


def real_data_table(wikitext: Path, trials: int) -> None:
    """Table 3: verdict shares of the default MonitorConfig per embedding test and size, on real text."""
    from harness.evaluation import text_examples
    from harness.monitoring import MonitorConfig, compare_profiles
    from harness.monitoring.monitor import text_file_examples

    rng = np.random.default_rng(0)
    sentences = text_file_examples(wikitext, split="sentences")
    sentences = [sentences[i] for i in np.sort(rng.permutation(len(sentences))[: 2 * max(SIZES) + 200])]
    paragraphs = text_examples()
    paragraphs = [paragraphs[i] for i in np.sort(rng.permutation(len(paragraphs))[: int(max(MIXES) * max(SIZES))])]
    started = time.perf_counter()
    reference, other = cached_embeddings(sentences), cached_embeddings(paragraphs)
    print(f"\nTable 3: MiniLM embeddings of {len(sentences)} WikiText-2 sentences ({wikitext.name}) and "
          f"{len(paragraphs)} documentation paragraphs ({time.perf_counter() - started:.0f} s); default MonitorConfig "
          f"(alpha_fail {MonitorConfig().alpha_fail}, {trials} trials per cell)")  # fmt: skip
    header = "".join(f"{f'power {mix:.0%}':>11s}" for mix in MIXES)
    print(f"{'test':14s} {'n':>5s} {'false alarm':>12s} {'inconclusive':>13s} {'ok':>6s}{header} {'s/compare':>10s}")
    config = MonitorConfig()
    for n in SIZES:
        shares: dict[tuple[str, float], collections.Counter] = collections.defaultdict(collections.Counter)
        seconds = 0.0
        for trial in range(trials):
            order = np.random.default_rng(trial).permutation(len(reference))
            base, rest = reference[order[:n]], reference[order[n:]]
            for mix in (0.0, *MIXES):
                k = round(mix * n)
                picked = np.random.default_rng(trial).permutation(len(other))[:k]
                current = np.concatenate([rest[: n - k], other[picked]])
                started = time.perf_counter()
                report = compare_profiles(_embedding_profile(base), _embedding_profile(current), config)
                seconds += time.perf_counter() - started
                for row in report.features:
                    shares[row.test, mix][row.verdict] += 1
        for test in ("hotelling_t2", "mmd_rbf"):
            null = shares[test, 0.0]
            powers = "".join(f"{shares[test, mix]['fail'] / trials:11.2f}" for mix in MIXES)
            print(f"{test:14s} {n:5d} {null['fail'] / trials:12.3f} {null['inconclusive'] / trials:13.2f} "
                  f"{null['ok'] / trials:6.2f}{powers} {seconds / trials / (1 + len(MIXES)):10.3f}")  # fmt: skip


def _embedding_profile(rows: np.ndarray) -> dict:
    features = {"embedding": {"kind": "embedding", "source": "minilm", "values": rows}}
    return {"schema": 2, "model": "bench", "n_examples": len(rows), "features": features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--target-trials", type=int, default=2000, help="trials of the fast Hotelling test in table 2")
    parser.add_argument("--n", type=int, default=500, help="reference and current sample size (table 1)")
    parser.add_argument("--real-trials", type=int, default=50, help="trials per cell of table 3 (0: skip it)")
    parser.add_argument("--wikitext", type=Path, default=ROOT.parent / "shared/data/wikitext-2/valid.txt",
                        help="a WikiText-2 file (table 3; skipped when missing)")  # fmt: skip
    parser.add_argument("--only-real", action="store_true", help="print table 3 only")
    args = parser.parse_args()
    if args.only_real:
        if args.real_trials < 1 or not args.wikitext.is_file():
            parser.error(f"--only-real needs --real-trials >= 1 and a WikiText-2 file (--wikitext {args.wikitext})")
        real_data_table(args.wikitext, args.real_trials)
        return
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
    if args.real_trials and args.wikitext.is_file():
        real_data_table(args.wikitext, args.real_trials)
    else:
        print(f"\nTable 3 skipped: no WikiText-2 file at {args.wikitext} (--wikitext) or --real-trials 0")


if __name__ == "__main__":
    main()
