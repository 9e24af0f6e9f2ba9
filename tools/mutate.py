"""Bounded mutation testing of the scientific core: one-line mutants, relevant tests only.

A full ``mutmut run`` over the core with the whole suite takes hours on two cores. This
script measures the survival rate on a *bounded, reproducible sample* instead:

* the **named** mutants: plausible one-line bugs in the headline numbers (issue 19), and
* a **random** sample of mutmut-style token mutants (numbers, arithmetic and comparison
  operators, ``and``/``or``, ``True``/``False``, unary minus) drawn with a fixed seed from
  the core modules (``signal``, ``perfusion``, ``metrics``, ``discriminant``,
  ``preprocessing``, ``model_selection``).

Each mutant is applied to a scratch copy of the repository (outside the repository, so
the optional OSIPI files in ``../shared`` are *not* seen, as in a clean checkout), and only
the test files that exercise the mutated module run, with ``-x``: a failing (or erroring,
or timed-out) run kills the mutant. Usage::

    OMP_NUM_THREADS=1 nice -n 10 python tools/mutate.py --named --random 60 --seed 0
    # the same mutants against the tests of another commit (e.g. before a change):
    OMP_NUM_THREADS=1 nice -n 10 python tools/mutate.py --named --random 60 --tests-from HEAD~1

``--list`` prints the mutants without running anything.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE = [
    "sklearn_hemo/signal.py",
    "sklearn_hemo/discriminant.py",
    *[f"sklearn_hemo/perfusion/{n}" for n in (
        "_deconvolution.py", "_leakage.py", "_patient.py", "_permeability.py", "_roi.py",
        "_validation.py")],
    *[f"sklearn_hemo/metrics/{n}" for n in ("_bootstrap.py", "_volumes.py")],
    *[f"sklearn_hemo/preprocessing/{n}" for n in ("_perfusion_features.py", "_patches.py")],
    *[f"sklearn_hemo/model_selection/{n}" for n in (
        "_compare.py", "_report.py", "_resume.py", "_setup.py", "_zoo.py")],
]

# the test files that exercise each module (prefix match on the path); the new pinned
# tests are added when present in the tree under test
TESTS = {
    "sklearn_hemo/signal.py": ["test_signal.py", "test_perfusion_features.py"],
    "sklearn_hemo/discriminant.py": ["test_discriminant.py"],
    "sklearn_hemo/perfusion/": ["test_perfusion.py", "test_perfusion_features.py"],
    "sklearn_hemo/metrics/": ["test_metrics_bootstrap.py", "test_volumes.py"],
    "sklearn_hemo/preprocessing/": ["test_patches.py", "test_perfusion_features.py"],
    "sklearn_hemo/model_selection/": ["test_compare.py", "test_zoo.py"],
    "sklearn_hemo/risk.py": ["test_maps.py", "test_cli_train_predict.py"],
    "sklearn_hemo/cli.py": ["test_cli_train_predict.py"],
}
# tests of tests/test_pinned_values.py per module (function-name prefixes): the whole
# file would add ~30 s to every mutant
PINNED = {
    "sklearn_hemo/perfusion/": ["test_exact_forward", "test_a_negative_residue",
                                "test_continuous_time", "test_leakage", "test_nonenhancing",
                                "test_permeability", "test_deconvolution"],
    "sklearn_hemo/signal.py": ["test_exact_forward", "test_continuous_time",
                               "test_detect_aif"],
    "sklearn_hemo/metrics/": ["test_interval", "test_cross_val_risk_map_table",
                              "test_cli_predict", "test_voxel_volume"],
    "sklearn_hemo/discriminant.py": ["test_srda", "test_every_compared_row"],
    "sklearn_hemo/model_selection/": ["test_every_compared_row", "test_fold_scores",
                                      "test_compare_models_refuses"],
    "sklearn_hemo/preprocessing/": ["test_predict_risk_maps", "test_cross_val_risk_map_table",
                                    "test_fold_scores"],
    "sklearn_hemo/risk.py": ["test_calibration", "test_with_probabilities",
                             "test_predict_risk_maps", "test_cross_val_risk_map_table",
                             "test_cli_predict"],
    "sklearn_hemo/cli.py": ["test_cli_predict"],
}
PINNED_FILE = "tests/test_pinned_values.py"

# plausible one-line bugs in the headline outputs: (name, file, original, replacement)
NAMED = [
    ("cbf-x1.1", "sklearn_hemo/perfusion/_deconvolution.py",
     "cbf = factor * 6000.0 *", "cbf = 1.1 * factor * 6000.0 *"),
    ("cbf-x1.2", "sklearn_hemo/perfusion/_deconvolution.py",
     "cbf = factor * 6000.0 *", "cbf = 1.2 * factor * 6000.0 *"),
    ("cbf-peak-of-abs-residue", "sklearn_hemo/perfusion/_deconvolution.py",
     "np.maximum(k.max(axis=-1), 0.0)", "np.abs(k).max(axis=-1)"),
    ("ci-alpha-not-halved", "sklearn_hemo/metrics/_bootstrap.py",
     "alpha = (1 - confidence_level) / 2", "alpha = (1 - confidence_level)"),
    ("ci-nan-resamples-in-quantile", "sklearn_hemo/metrics/_bootstrap.py",
     "np.quantile(replicates[valid],", "np.quantile(replicates,"),
    ("srda-primal-alpha-times-n", "sklearn_hemo/discriminant.py",
     "G.flat[:: n_features + 1] += self.alpha",
     "G.flat[:: n_features + 1] += self.alpha * n_samples"),
    ("srda-dual-alpha-times-n", "sklearn_hemo/discriminant.py",
     "G.flat[:: n_samples + 1] += self.alpha",
     "G.flat[:: n_samples + 1] += self.alpha * n_samples"),
    ("compare-flipped-decision-sign", "sklearn_hemo/model_selection/_setup.py",
     "return scores if classes.index(1) == 1 else -scores",
     "return -scores if classes.index(1) == 1 else scores"),
    ("calibration-voxel-split", "sklearn_hemo/risk.py",
     'method="sigmoid", cv=cv,', 'method="sigmoid", cv=n_folds,'),
    ("calibration-ensemble", "sklearn_hemo/risk.py",
     'method="sigmoid", cv=cv, ensemble=False', 'method="sigmoid", cv=cv, ensemble=True'),
    ("cv-maps-params-str-keys-ignored", "sklearn_hemo/risk.py",
     "params.get(k, params.get(str(k), {}))", "params.get(k, {})"),
    ("risk-maps-kwargs-dropped", "sklearn_hemo/risk.py",
     "predict_risk_map(estimator, p, cohort=source, **kwargs) for p in patients]",
     "predict_risk_map(estimator, p, cohort=source) for p in patients]"),
    ("cli-volume-default-threshold", "sklearn_hemo/cli.py",
     "{predicted_volume(risk, args.threshold):.2f}", "{predicted_volume(risk, 0.5):.2f}"),
    ("cli-dice-default-threshold", "sklearn_hemo/cli.py",
     "dice_score(risk, patient.ht_mask, args.threshold)", "dice_score(risk, patient.ht_mask)"),
]

_SWAPS = {
    "+": ["-"], "-": ["+"], "*": ["/"], "/": ["*"], "//": ["/"], "**": ["*"], "%": ["/"],
    "<": ["<="], "<=": ["<"], ">": [">="], ">=": [">"], "==": ["!="], "!=": ["=="],
    "+=": ["-="], "-=": ["+="], "*=": ["/="], "/=": ["*="],
    "and": ["or"], "or": ["and"], "True": ["False"], "False": ["True"],
    "is": ["is not"], "in": ["not in"],
}


def _number_mutants(text):
    try:
        value = ast.literal_eval(text)
    except ValueError:
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    if isinstance(value, int):
        return [str(value + 1)]
    return [repr(round(value * 1.1, 12) if value else 1.0)]


def token_mutants(path, source):
    """mutmut-style one-token mutants of ``source``: (line, col, old, new), parseable only."""
    lines = source.splitlines(keepends=True)
    tree_dump = ast.dump(ast.parse(source))
    skip = set()
    for node in ast.walk(ast.parse(source)):
        # signatures, imports, __all__ and annotations: not behaviour
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0].lineno
            skip.update(range(node.lineno, first))
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip.update(range(node.lineno, node.end_lineno + 1))
    out = []
    previous = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        before, previous = previous, tok
        if tok.start[0] in skip or tok.start[0] != tok.end[0]:
            continue
        if tok.string in ("*", "**") and (before is None or before.string in "([{,="
                                          or before.type == tokenize.NL):
            continue  # argument unpacking, not arithmetic
        if tok.type == tokenize.NUMBER:
            news = _number_mutants(tok.string)
        elif tok.type in (tokenize.OP, tokenize.NAME):
            news = _SWAPS.get(tok.string, [])
        else:
            continue
        row, col = tok.start
        line = lines[row - 1]
        for new in news:
            mutated_line = line[:col] + new + line[tok.end[1]:]
            mutated = "".join(lines[:row - 1] + [mutated_line] + lines[row:])
            try:
                dump = ast.dump(ast.parse(mutated))
            except SyntaxError:
                continue
            if dump != tree_dump:
                out.append({"file": path, "line": row, "col": col, "old": tok.string,
                            "new": new, "text": line.strip()})
    return out


def random_sample(n, seed):
    candidates = []
    for path in CORE:
        candidates += token_mutants(path, (ROOT / path).read_text())
    rng = random.Random(seed)
    picked = rng.sample(candidates, min(n, len(candidates)))
    for m in picked:
        m["name"] = f"{m['file'].removeprefix('sklearn_hemo/')}:{m['line']} {m['old']}->{m['new']}"
    return picked, len(candidates)


def named_mutants():
    out = []
    for name, path, old, new in NAMED:
        text = (ROOT / path).read_text()
        if text.count(old) != 1:
            raise SystemExit(f"named mutant {name}: {old!r} occurs {text.count(old)} times "
                             f"in {path}; update tools/mutate.py")
        out.append({"name": name, "file": path, "old": old, "new": new})
    return out


def apply(mutant, tree):
    path = tree / mutant["file"]
    text = path.read_text()
    if "line" in mutant:
        lines = text.splitlines(keepends=True)
        line = lines[mutant["line"] - 1]
        col = mutant["col"]
        assert line[col:col + len(mutant["old"])] == mutant["old"], mutant
        lines[mutant["line"] - 1] = line[:col] + mutant["new"] + line[col + len(mutant["old"]):]
        mutated = "".join(lines)
    else:
        mutated = text.replace(mutant["old"], mutant["new"], 1)
    path.write_text(mutated)
    return text


def tests_for(path, tree):
    files = []
    for prefix, names in TESTS.items():
        if path.startswith(prefix):
            files += names
    out = [f"tests/{n}" for n in dict.fromkeys(files) if (tree / "tests" / n).exists()]
    pinned = tree / PINNED_FILE
    if pinned.exists():
        names = re.findall(r"^def (test_\w+)", pinned.read_text(), flags=re.M)
        prefixes = [p for key, ps in PINNED.items() if path.startswith(key) for p in ps]
        out += [f"{PINNED_FILE}::{n}" for n in names
                if any(n.startswith(p) for p in prefixes)]
    return out


def run_one(mutant, tree, timeout):
    original = apply(mutant, tree)
    try:
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               "--no-header", *tests_for(mutant["file"], tree)]
        try:
            proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                                  timeout=timeout)
            killed = proc.returncode != 0
            tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout else []
        except subprocess.TimeoutExpired:
            killed, tail = True, ["timeout"]
    finally:
        (tree / mutant["file"]).write_text(original)
    return killed, (tail or [""])[0]


def scratch_copy(tests_from):
    tmp = Path(tempfile.mkdtemp(prefix="sklearn-hemo-mutate-"))
    tree = tmp / "repo"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "mutants", "__pycache__", "*.egg-info", "docs", "examples", "build"))
    if tests_from:
        shutil.rmtree(tree / "tests")
        archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tmp, tree


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--named", action="store_true", help="the named mutants")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="N random token mutants of the core")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tests-from", metavar="REF",
                        help="run the tests of this git commit instead of the working tree's")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--json", metavar="FILE", help="write the results here")
    parser.add_argument("--match", metavar="TEXT", help="only mutants whose name has TEXT")
    parser.add_argument("--survivors-of", metavar="FILE",
                        help="run only the mutants that survived in this --json file (after "
                        "adding tests: killed mutants stay killed)")
    args = parser.parse_args(argv)
    mutants = named_mutants() if args.named else []
    if args.random:
        sample, total = random_sample(args.random, args.seed)
        print(f"random sample: {len(sample)} of {total} token mutants of the core "
              f"(seed {args.seed})")
        mutants += sample
    if args.survivors_of:
        alive = {r["name"] for r in json.loads(Path(args.survivors_of).read_text())
                 if not r["killed"]}
        mutants = [m for m in mutants if m["name"] in alive]
    if args.match:
        mutants = [m for m in mutants if args.match in m["name"]]
    if args.list:
        for m in mutants:
            print(m["name"], "|", m.get("text", m["new"]))
        return 0
    tmp, tree = scratch_copy(args.tests_from)
    env_note = os.environ.get("OMP_NUM_THREADS")
    if env_note != "1":
        print("note: set OMP_NUM_THREADS=1 (and nice) on a shared machine", file=sys.stderr)
    results = []
    try:
        for m in mutants:
            start = time.perf_counter()
            killed, tail = run_one(m, tree, args.timeout)
            seconds = time.perf_counter() - start
            results.append({**m, "killed": killed, "seconds": round(seconds, 1),
                            "pytest": tail})
            print(f"{'killed  ' if killed else 'SURVIVED'} {seconds:6.1f}s  {m['name']}"
                  f"{'' if killed else '  | ' + m.get('text', m['new'])}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for group in ("named", "random"):
        rows = [r for r in results if ("line" in r) == (group == "random")]
        if rows:
            survived = sum(not r["killed"] for r in rows)
            print(f"{group}: {survived} of {len(rows)} survived "
                  f"({100 * survived / len(rows):.0f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
