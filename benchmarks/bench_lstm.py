"""Benchmark: LSTMClassifier (skorch) training time against a plain PyTorch loop.

Both train the same :class:`~sklearn_hemo.neural.HemoLSTM` on the same data (by
default the paper's 50,000 voxels x 60 time points x 10 step features plus 18 static DWI
values), with the same batch size, epochs, optimiser and loss. The script prints the fit-time
ratio (target <= 1.10: the scikit-learn/skorch wrapper may cost at most 10%) and inference
throughput in voxels per second.

Run ``python benchmarks/bench_lstm.py --n-samples 2000 --epochs 1`` for a quick smoke test;
``--device cuda --compare-cpu`` on a GPU machine adds the device line: fit and inference
throughput on the GPU and the speed-up over the CPU.
Each repeat times the plain loop and the classifier back to back (alternating which goes
first) and the best of each is kept. On CPU the verdict uses process CPU time, which other
jobs on a shared machine do not inflate the way they inflate wall-clock time; on GPU it uses
wall-clock time (CPU time does not see GPU work). Both are printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sklearn_hemo.neural import HemoLSTM, LSTMClassifier

TARGET_RATIO = 1.10


def make_data(n_samples, n_timepoints, seed=0):
    """Random PatchExtractor-layout rows ("pwi+aif+dwi") with balanced labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_timepoints * 10 + 18), dtype=np.float32)
    y = np.arange(n_samples) % 2
    return X, y


def plain_fit(X, y, args):
    """The same module, optimiser and loss in a hand-written PyTorch loop."""
    torch.manual_seed(0)
    module = HemoLSTM(n_timepoints=args.n_timepoints, n_step_features=9, n_classes=2,
                      aif=True, n_static=18, hidden_size=args.hidden_size).to(args.device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    X_t = torch.from_numpy(X)
    y_t = torch.from_numpy(y.astype(np.int64))
    module.train()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(X_t)).split(args.batch_size):
            Xb, yb = X_t[idx].to(args.device), y_t[idx].to(args.device)
            optimizer.zero_grad()
            loss = criterion(module(Xb), yb)
            loss.backward()
            optimizer.step()
            loss.item()  # skorch reads every batch loss too; keep the sync comparable
    return module


def plain_predict(module, X, args):
    module.eval()
    out = []
    with torch.no_grad():
        for Xb in torch.from_numpy(X).split(args.batch_size):
            out.append(torch.softmax(module(Xb.to(args.device)), dim=1).cpu())
    return torch.cat(out).numpy()


def timed(func, *func_args):
    """Return ((wall seconds, process CPU seconds), result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = func(*func_args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=50_000)
    parser.add_argument("--n-timepoints", type=int, default=60)
    parser.add_argument("--hidden-size", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2,
                        help="training epochs for both (the paper trains 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's setting)")
    parser.add_argument("--compare-cpu", action="store_true",
                        help="with --device cuda: also time LSTMClassifier on the CPU and "
                        "print the device's speed-up")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds: checks that the script runs (the tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_samples, args.epochs, args.repeats, args.hidden_size = 256, 1, 1, 8
    if args.threads:
        torch.set_num_threads(args.threads)

    X, y = make_data(args.n_samples, args.n_timepoints)
    print(f"data: {X.shape[0]} voxels x {args.n_timepoints} steps x 10 + 18 static, "
          f"batch {args.batch_size}, {args.epochs} epochs, device {args.device}, "
          f"{torch.get_num_threads()} torch threads")
    clf = LSTMClassifier(inputs="pwi+aif+dwi", n_timepoints=args.n_timepoints,
                         hidden_size=args.hidden_size, batch_size=args.batch_size,
                         max_epochs=args.epochs, device=args.device, random_state=0)
    # Warm up both paths (lazy torch/oneDNN initialisation, first-call allocations) so that
    # neither pays them inside the timed region.
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    plain_fit(X[:256], y[:256], warm)
    clf.set_params(max_epochs=1).fit(X[:256], y[:256])
    clf.set_params(max_epochs=args.epochs)
    plain_times, clf_times = [], []
    for repeat in range(args.repeats):
        if repeat % 2:
            t_clf, _ = timed(clf.fit, X, y)
            t_plain, module = timed(plain_fit, X, y, args)
        else:
            t_plain, module = timed(plain_fit, X, y, args)
            t_clf, _ = timed(clf.fit, X, y)
        plain_times.append(t_plain)
        clf_times.append(t_clf)
        print(f"  fit wall/cpu s: plain {t_plain[0]:.2f}/{t_plain[1]:.2f}, "
              f"LSTMClassifier {t_clf[0]:.2f}/{t_clf[1]:.2f}")

    ratio_wall = min(t[0] for t in clf_times) / min(t[0] for t in plain_times)
    ratio_cpu = min(t[1] for t in clf_times) / min(t[1] for t in plain_times)
    ratio, clock = (ratio_wall, "wall") if args.device != "cpu" else (ratio_cpu, "cpu")
    t_plain_pred, _ = timed(plain_predict, module, X, args)
    t_clf_pred, _ = timed(clf.predict_proba, X)
    pred_ratio = (t_clf_pred[0] / t_plain_pred[0] if clock == "wall"
                  else t_clf_pred[1] / t_plain_pred[1])
    print(f"fit time ratio LSTMClassifier / plain PyTorch: wall {ratio_wall:.3f}, "
          f"cpu {ratio_cpu:.3f}; verdict on {clock} time: {ratio:.3f} "
          f"(target <= {TARGET_RATIO:.2f}) -> {'OK' if ratio <= TARGET_RATIO else 'OVER'}")
    print(f"inference (wall): LSTMClassifier {len(X) / t_clf_pred[0]:,.0f} voxels/s, "
          f"plain {len(X) / t_plain_pred[0]:,.0f} voxels/s; {clock}-time ratio "
          f"{pred_ratio:.3f}")
    best_fit = min(t[0] for t in clf_times)
    print(f"device line: {args.device} ({_device_name(args.device)}): LSTMClassifier fit "
          f"{best_fit:.2f} s wall for {len(X)} voxels x {args.epochs} epochs "
          f"({len(X) * args.epochs / best_fit:,.0f} voxel-epochs/s), inference "
          f"{len(X) / t_clf_pred[0]:,.0f} voxels/s")
    if args.compare_cpu and args.device != "cpu":
        cpu = clf.set_params(device="cpu")
        t_cpu, _ = timed(cpu.fit, X, y)
        print(f"device line: cpu ({torch.get_num_threads()} threads): LSTMClassifier fit "
              f"{t_cpu[0]:.2f} s wall; {args.device} speed-up {t_cpu[0] / best_fit:.1f}x")
    return ratio


def _device_name(device):
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


if __name__ == "__main__":
    main()
