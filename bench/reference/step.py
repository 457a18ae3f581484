"""PyTorch reference of `sll bench step`: the same models, objective and optimizer.

Times full training steps (forward, local losses, backward, Adam) on random data and
prints one JSON object like `sll bench step --json`. See bench/reference/README.md.
`--device cuda` runs it on the GPU (synchronised before the clock is read).

  mlp: 784-1024-1024-1024, one Linear+ReLU per block, linear head 1024->10 per block, batch 128
  cnn: conv3x3 3->64->128->256 (+ReLU), max-pool after the 2nd and 3rd conv, one conv per
       block, feature maps average-pooled to 2x2 for heads and projections, batch 64
  SLL: d0 = 512 Gaussian projection N(0, 1/d0) per block and for the input (pooled 2x2
       for images), multiplicative dropout p = 0.1 before it, q = softmax(z / tau),
       tau = 1, loss = CE + beta * Bhattacharyya(q_i, sg(q_{i-1})), beta = 1.
"""
import argparse
import contextlib
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp_blocks():
    widths = [784, 1024, 1024, 1024]
    blocks = [nn.Sequential(nn.Flatten(), nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths, widths[1:])]
    return blocks, [1024] * 3, lambda x: x.flatten(1), (1, 28, 28), 128


def cnn_blocks():
    spec = [(3, 64, False), (64, 128, True), (128, 256, True)]
    blocks = []
    for c_in, c_out, pool in spec:
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
    pool2 = lambda h: F.adaptive_avg_pool2d(h, 2).flatten(1)
    return blocks, [c * 4 for _, c, _ in spec], pool2, (3, 32, 32), 64


def bhattacharyya(log_p, log_q):
    return -torch.logsumexp(0.5 * (log_p + log_q), dim=-1).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--method", choices=["sll", "local", "bp"], default="sll")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d0", type=int, default=512)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--amp", action="store_true",
                    help="forward passes and losses under torch.autocast(device, torch.bfloat16), the one-line mixed precision")
    ap.add_argument("--pure-bf16", action="store_true",
                    help="every weight, input and projection in bf16, losses from fp32 logits: no cast at all, "
                         "the speed that explicit casting could at best reach (not mixed precision: no fp32 master weights)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.amp and a.pure_bf16:
        raise SystemExit("step.py: --amp and --pure-bf16 exclude each other")
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"step.py: --device {a.device}: torch {torch.__version__} sees no CUDA device")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    blocks, dims, pool, shape, batch = mlp_blocks() if a.model == "mlp" else cnn_blocks()
    pool_input = (lambda x: x.flatten(1)) if a.model == "mlp" else (lambda x: F.adaptive_avg_pool2d(x, 2).flatten(1))
    in_dim = pool_input(torch.zeros(1, *shape)).shape[1]
    classes, d0, tau, beta, p = 10, a.d0, 1.0, 1.0, 0.1
    heads = [nn.Linear(d, classes) for d in dims]
    proj = [torch.randn(d, d0) / d0 ** 0.5 for d in [in_dim] + dims]  # fixed, transposed: u @ R^T
    kind = torch.bfloat16 if a.pure_bf16 else torch.float32
    blocks = [b.to(dev, kind) for b in blocks]
    heads = [h.to(dev, kind) for h in heads]
    proj = [r.to(dev, kind) for r in proj]

    if a.method == "bp":
        params = [q for b in blocks for q in b.parameters()] + list(heads[-1].parameters())
        opts = [torch.optim.Adam(params, lr=1e-3)]
    else:
        opts = [torch.optim.Adam(list(b.parameters()) + list(h.parameters()), lr=1e-3) for b, h in zip(blocks, heads)]

    # --amp: PyTorch's one line of mixed precision around every forward pass and loss.
    amp = (lambda: torch.autocast(dev.type, torch.bfloat16)) if a.amp else contextlib.nullcontext

    def step(x, y):
        if a.method == "bp":
            with amp():
                h = x
                for b in blocks:
                    h = b(h)
                loss = F.cross_entropy(heads[-1](pool(h)).float(), y)
            opts[0].zero_grad()
            loss.backward()
            opts[0].step()
            return
        sll = a.method == "sll"
        with amp():
            log_q_prev = F.log_softmax((F.dropout(pool_input(x), p) @ proj[0]).float() / tau, -1) if sll else None
        h = x
        for i, (b, head, opt) in enumerate(zip(blocks, heads, opts)):
            with amp():
                out = b(h.detach())
                u = pool(out)
                loss = F.cross_entropy(head(u).float(), y)
                if sll:
                    log_q = F.log_softmax((F.dropout(u, p) @ proj[i + 1]).float() / tau, -1)
                    loss = loss + beta * bhattacharyya(log_q, log_q_prev.detach())
                    log_q_prev = log_q.detach()
            opt.zero_grad()
            loss.backward()
            opt.step()
            h = out.detach()

    data = [(torch.randn(batch, *shape).to(dev, kind), torch.randint(classes, (batch,)).to(dev)) for _ in range(16)]
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for i in range(a.warmup):
        step(*data[i % 16])
    sync()
    start = time.perf_counter()
    for i in range(a.steps):
        step(*data[i % 16])
    sync()
    seconds = (time.perf_counter() - start) / a.steps
    result = {
        "engine": f"pytorch {torch.__version__}",
        "model": a.model,
        "method": a.method,
        "batch_size": batch,
        "threads": torch.get_num_threads(),
        "device": str(dev),
        "precision": "bf16-autocast" if a.amp else "bf16-pure" if a.pure_bf16 else "fp32",
        "samples_per_second": batch / seconds,
        "ms_per_step": 1e3 * seconds,
    }
    print(json.dumps(result) if a.json else f"{a.model} {a.method} {result['precision']}: {batch / seconds:.0f} samples/s, {1e3 * seconds:.2f} ms/step")


if __name__ == "__main__":
    main()
