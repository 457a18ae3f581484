"""PyTorch reference of `sll train`: trains a preset with SLL the way `sll` does.

Reads the preset's TOML (configs/<name>.toml, or a path) with the defaults of
src/config/ and src/model/, and trains it with the same algorithm, shapes, hyperparameters and
schedule (not bit for bit: initial weights, projections, dropout masks, shuffling and
augmentation are drawn from PyTorch's generators instead of ours):

  data      the training set's (or --train-subset's) per-channel mean and population
            std standardise both splits; each epoch visits a fresh seeded permutation
            in minibatches of data.batch_size, the last partial batch kept; CIFAR
            augmentation (random crop of the zero-padded standardised image, horizontal
            flip with probability 1/2, cutout) per example, as src/data/augment.rs
  model     mlp: Linear (PyTorch's default init, as ours) + norm + activation per layer,
            model.block_size layers per block; cnn: conv3x3 (bias) + BatchNorm + ReLU
            (+ 2x2 max-pool after the stages in model.pool_after) per stage,
            model.block_size stages per block, channels-last like ours
  pooling   u_i = h_i flattened (mlp) or adaptive-average-pooled to a pool_grid^2 grid
            and flattened (cnn); the input's u_0 likewise (q_0)
  objective per block L_i = CE(head_i(h_i), y) + beta * D_B(q_i, sg(q_{i-1})), head_i a
            linear map on u_i (objective.head = "linear") or, SLL's default ("pooled"),
            on h_i average-pooled until C*h*w <= 2048 (halving the grid; vectors as
            they are), q_i = softmax(R_i (m_i * u_i) / tau), m_i inverted Bernoulli
            dropout of rate objective.dropout (training only), D_B the Bhattacharyya
            distance -log sum sqrt(p q) computed as -logsumexp((log p + log q) / 2),
            batch mean; q_0 = softmax(R_0 (m_0 * u_0) / tau) without gradient; every
            block's input detached, one optimizer per block
  R_i       gaussian: entries N(0, 1/d0); sparse: each input coordinate goes to one
            category in each of k equal slices of 0..d0 (k = sparse_nonzeros) with a
            random sign, value +-1/sqrt(k) (src/objective.rs, Projection::sparse)
  optim     Adam (L2 decay) / AdamW (decoupled) with betas (0.9, 0.999), eps 1e-8, the
            learning rate set before every step: linear warm-up over
            round(warmup_epochs * steps_per_epoch) steps ((s + 1) / warmup * lr), then
            cosine from lr to min_lr over the remaining steps (src/train/optim.rs)
  eval      after every epoch, test accuracy of every block's head (eval mode, batches
            of data.eval_batch_size); the last block's is the network's

Prints one JSON line per epoch on stdout:
  {"epoch", "seconds" (cumulative training seconds, evaluation excluded),
   "epoch_seconds", "eval_seconds", "test_accuracy" (percent),
   "block_test_accuracy" (percent), "learning_rate" (at the epoch's start), "train_loss"}

    python bench/reference/train.py [--config mnist-mlp] [--epochs N] [--threads T]
        [--seed S] [--data-dir D] [--train-subset N] [--test-subset N] [--device cpu]

See bench/reference/README.md for installing torch.
"""
import argparse
import contextlib
import gzip
import json
import math
import struct
import sys
import tarfile
import time
import tomllib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# The defaults of src/config/ and src/model/ for the keys this script reads.
DEFAULTS = {
    "data": {"dataset": "mnist", "batch_size": 128, "eval_batch_size": 1000, "normalize": True,
             "mean": [], "std": [], "train_subset": 0, "test_subset": 0,
             "augment": {"crop_padding": 0, "crop_size": None, "flip": False, "cutout": 0}},
    "model": {"kind": "mlp", "hidden": [1024, 1024, 1024], "channels": [64, 128, 256],
              "pool_after": [2, 3], "pool_grid": 2, "channels_last": True, "activation": "relu",
              "norm": "none", "block_size": 1},
    "objective": {"d0": 512, "projection": "gaussian", "sparse_nonzeros": 4, "tau": 1.0, "beta": 1.0,
                  "dropout": 0.1, "prior": "previous", "head": "auto", "projection_input": "pooled",
                  "shared_projection": False},
    "optim": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine",
              "warmup_epochs": 0.0, "min_lr": 0.0},
    "train": {"method": "sll", "epochs": 15, "seed": 0},
}


def load_config(name):
    path = Path(name)
    if not path.is_file():
        path = REPO / "configs" / f"{name}.toml"
    if not path.is_file():
        sys.exit(f"train.py: --config {name}: no such file nor preset in {REPO / 'configs'}")
    with open(path, "rb") as f:
        given = tomllib.load(f)
    config = {section: dict(values) for section, values in DEFAULTS.items()}
    config["data"]["augment"] = dict(DEFAULTS["data"]["augment"])
    for section, values in given.items():
        if section == "preset":
            continue
        for key, value in values.items():
            if section == "data" and key == "augment":
                config["data"]["augment"].update(value)
            else:
                config[section][key] = value
    config["preset"] = given.get("preset", path.stem)
    # What this reference implements; anything else is refused rather than silently changed.
    m, o, t = config["model"], config["objective"], config["train"]
    checks = [
        (m["kind"] in ("mlp", "cnn"), "model.kind must be mlp or cnn"),
        (t["method"] == "sll", "train.method must be sll"),
        (o["head"] in ("auto", "linear", "pooled"), "objective.head must be linear or pooled"),
        (o["projection_input"] == "pooled", "objective.projection_input must be pooled"),
        (not o["shared_projection"], "objective.shared_projection is not implemented here"),
        (o["prior"] in ("previous", "none"), "objective.prior must be previous or none"),
        (o["projection"] in ("gaussian", "sparse"), "objective.projection must be gaussian or sparse"),
        (config["optim"]["optimizer"] in ("adam", "adamw"), "optim.optimizer must be adam or adamw"),
        (config["optim"]["schedule"] in ("cosine", "constant"), "optim.schedule must be cosine or constant"),
        (config["data"]["dataset"] in ("mnist", "fashion-mnist", "cifar10"), "data.dataset must be mnist, fashion-mnist or cifar10"),
        (config["data"]["augment"].get("crop_size") is None, "data.augment.crop_size is not implemented here"),
    ]
    for ok, why in checks:
        if not ok:
            sys.exit(f"train.py: {path}: {why}")
    return config


# ---------------------------------------------------------------- data


def read_idx(path):
    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if data[0] != 0 or data[1] != 0 or data[2] != 8:
        sys.exit(f"train.py: {path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_idx(folder):
    def one(name):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return read_idx(candidate)
        sys.exit(f"train.py: {folder / name}(.gz): not found")

    splits = []
    for prefix in ("train", "t10k"):
        images = one(f"{prefix}-images-idx3-ubyte").float().div_(255.0).unsqueeze(1)
        splits.append((images, one(f"{prefix}-labels-idx1-ubyte").long()))
    return splits


def load_cifar10(folder):
    members = [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]
    extracted = folder / "cifar-10-batches-bin"
    if extracted.is_dir():
        read = lambda name: (extracted / name).read_bytes()
    else:
        archive = folder / "cifar-10-binary.tar.gz"
        if not archive.is_file():
            sys.exit(f"train.py: neither {extracted} nor {archive} exists")
        with tarfile.open(archive) as tar:
            blobs = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".bin")}
        read = lambda name: blobs[name]
    splits = []
    for names in members:
        raw = torch.frombuffer(bytearray(b"".join(read(n) for n in names)), dtype=torch.uint8).reshape(-1, 3073)
        splits.append((raw[:, 1:].reshape(-1, 3, 32, 32).float().div_(255.0), raw[:, 0].long()))
    return splits


def find_data_dir(given, dataset):
    folder = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar-10"}[dataset]
    candidates = [Path(given)] if given else [REPO / "data", REPO.parent / "shared" / "data"]
    for c in candidates:
        if (c / folder).is_dir():
            return c / folder
    sys.exit(f"train.py: no {folder}/ under {', '.join(map(str, candidates))} (give --data-dir)")


def prepare_data(config, data_dir):
    d = config["data"]
    folder = find_data_dir(data_dir, d["dataset"])
    (train_x, train_y), (test_x, test_y) = load_cifar10(folder) if d["dataset"] == "cifar10" else load_idx(folder)
    if d["train_subset"]:
        train_x, train_y = train_x[: d["train_subset"]], train_y[: d["train_subset"]]
    if d["test_subset"]:
        test_x, test_y = test_x[: d["test_subset"]], test_y[: d["test_subset"]]
    if d["normalize"]:
        if d["mean"]:
            mean, std = torch.tensor(d["mean"]), torch.tensor(d["std"])
        else:
            std, mean = torch.std_mean(train_x.double(), dim=(0, 2, 3), unbiased=False)
        shape = (1, -1, 1, 1)
        mean, std = mean.float().reshape(shape), std.float().reshape(shape)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    return train_x.contiguous(), train_y, test_x.contiguous(), test_y, 10


def augment(x, a, gen):
    """Random crop of the zero-padded images and horizontal flip, per example (as
    src/data/augment.rs, on standardised images); vectorised over the batch."""
    n, c, h, w = x.shape
    p = a["crop_padding"]
    if p == 0 and not a["flip"] and a["cutout"] == 0:
        return x
    if p > 0:
        x = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    ar = torch.arange(h)
    rows = dy[:, None] + ar  # [n, h]
    cols = torch.arange(w).expand(n, w)
    if a["flip"]:
        flip = torch.rand(n, generator=gen) < 0.5
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    cols = dx[:, None] + cols  # [n, w]
    idx = torch.arange(n)[:, None, None]
    out = x.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if a["cutout"] > 0:
        size, half = a["cutout"], a["cutout"] // 2
        cy, cx = torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)
        y0, x0 = (cy - half).clamp(min=0), (cx - half).clamp(min=0)
        y1, x1 = (cy + size - half).clamp(max=h), (cx + size - half).clamp(max=w)
        yy, xx = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        keep = ~((yy >= y0[:, None, None]) & (yy < y1[:, None, None]) & (xx >= x0[:, None, None]) & (xx < x1[:, None, None]))
        out = out * keep[:, None].to(out.dtype)
    return out.contiguous()


# ---------------------------------------------------------------- model


def activation(name):
    return {"relu": nn.ReLU(), "gelu": nn.GELU()}[name]


def bn_init_as_tch(blocks):
    """Batch-norm scales as ours initialises them: tch's BatchNormConfig default draws
    gamma ~ U(0, 1) (PyTorch's nn.BatchNorm starts at gamma = 1); beta = 0 in both."""
    for b in blocks:
        for layer in b.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                nn.init.uniform_(layer.weight, 0.0, 1.0)


def build_network(config, in_shape):
    """Blocks, each block's pooling, pooled dims, and the input's pooling."""
    m = config["model"]
    blocks, dims = [], []
    if m["kind"] == "mlp":
        in_dim = in_shape[0] * in_shape[1] * in_shape[2]
        widths = m["hidden"]
        for start in range(0, len(widths), m["block_size"]):
            layers = [nn.Flatten()]
            for width in widths[start:start + m["block_size"]]:
                layers.append(nn.Linear(in_dim, width))
                if m["norm"] == "layer":
                    layers.append(nn.LayerNorm(width))
                elif m["norm"] == "batch":
                    layers.append(nn.BatchNorm1d(width))
                layers.append(activation(m["activation"]))
                in_dim = width
            blocks.append(nn.Sequential(*layers))
            dims.append(in_dim)
        bn_init_as_tch(blocks)
        pool = lambda h: h.flatten(1)
        return blocks, dims, pool, pool
    grid = m["pool_grid"]
    c_in = in_shape[0]
    channels = m["channels"]
    for start in range(0, len(channels), m["block_size"]):
        layers = []
        for index in range(start, min(start + m["block_size"], len(channels))):
            c_out = channels[index]
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=True))
            if m["norm"] == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU())
            if index + 1 in m["pool_after"]:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        blocks.append(nn.Sequential(*layers))
        dims.append(c_in * grid * grid)
    bn_init_as_tch(blocks)
    pool = lambda h: F.adaptive_avg_pool2d(h, grid).flatten(1)
    return blocks, dims, pool, pool


POOLED_MAX_FEATURES = 2048


def pooled_grid(c, h, w):
    """The grid of the `pooled` head: h x w halved (rounding up) until c*h*w <= 2048."""
    kernel = 1
    size = lambda k: (-(-h // k), -(-w // k))
    while c * size(kernel)[0] * size(kernel)[1] > POOLED_MAX_FEATURES and size(kernel) != (1, 1):
        kernel *= 2
    return size(kernel)


def head_inputs(kind, blocks, in_shape, pool, pooled_dims):
    """Per block: what its head reads (a function of the block's output) and its width."""
    if kind == "linear":
        return [pool] * len(blocks), pooled_dims
    readers, dims = [], []
    with torch.no_grad():
        h = torch.zeros(1, *in_shape)
        for b in blocks:
            h = b.eval()(h)
            if h.dim() == 4:
                grid = pooled_grid(*h.shape[1:])
                readers.append(lambda out, g=grid: F.adaptive_avg_pool2d(out, g).flatten(1))
                dims.append(h.shape[1] * grid[0] * grid[1])
            else:
                readers.append(lambda out: out.flatten(1))
                dims.append(h[0].numel())
    return readers, dims


class Projection:
    """The fixed random projection R (d0 x dim), applied as u -> R u for rows u."""

    def __init__(self, kind, dim, d0, k, gen, impl, device):
        self.kind, self.d0 = kind, d0
        if kind == "gaussian":
            self.matrix_t = (torch.randn(dim, d0, generator=gen) / math.sqrt(d0)).to(device)
            return
        k = max(1, min(k, d0))
        buckets = torch.cat([torch.randint(s * d0 // k, (s + 1) * d0 // k, (dim,), generator=gen) for s in range(k)])
        signs = torch.randint(0, 2, (k * dim,), generator=gen).float() * 2 - 1
        values = signs / math.sqrt(k)
        self.k, self.impl = k, impl
        if impl == "dense":
            m = torch.zeros(dim, d0)
            m.index_put_((torch.arange(dim).repeat(k), buckets), values, accumulate=True)
            self.matrix_t = m.to(device)
        else:
            self.matrix_t = None
            self.buckets, self.values = buckets.to(device), values[:, None].to(device)

    def __call__(self, u):
        if self.matrix_t is not None:
            return u @ self.matrix_t
        # Sparse, as src/objective.rs's autograd path: z^T = sum_j values_j * u^T_j -> row buckets_j.
        source = u.t().contiguous().repeat(self.k, 1) * self.values
        zeros = torch.zeros(self.d0, u.shape[0], dtype=source.dtype, device=u.device)
        return zeros.index_add(0, self.buckets, source).t()


def bhattacharyya(log_p, log_q):
    return -torch.logsumexp(0.5 * (log_p + log_q), dim=-1).mean()


def lr_at(o, step, steps_per_epoch, total_steps):
    if o["schedule"] == "constant":
        return o["lr"]
    warmup = int(round(o["warmup_epochs"] * steps_per_epoch))
    if step < warmup:
        return o["lr"] * (step + 1) / warmup
    span = max(total_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return o["min_lr"] + 0.5 * (o["lr"] - o["min_lr"]) * (1 + math.cos(math.pi * progress))


def make_optimizer(o, params, impl):
    cls = torch.optim.AdamW if o["optimizer"] == "adamw" else torch.optim.Adam
    kwargs = dict(lr=o["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=o["weight_decay"])
    if impl == "fused":
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return cls(params, foreach=(impl == "foreach") or None, **kwargs)


# ---------------------------------------------------------------- training


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="mnist-mlp", help="preset name (configs/NAME.toml) or a TOML path")
    ap.add_argument("--epochs", type=int, help="default: the preset's train.epochs")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, help="default: the preset's train.seed")
    ap.add_argument("--data-dir", help="folder holding mnist/ or cifar-10/ (default: data/, then ../shared/data/)")
    ap.add_argument("--train-subset", type=int, help="train on the first N examples")
    ap.add_argument("--test-subset", type=int, help="evaluate on the first N test examples")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--projection-impl", choices=["index-add", "dense"], default="index-add",
                    help="the sparse projection as ours' autograd path (index-add) or as a dense matrix product")
    ap.add_argument("--optimizer-impl", choices=["fused", "foreach", "default"], default="fused",
                    help="torch.optim implementation (fused where torch supports it on the device)")
    ap.add_argument("--amp", action="store_true",
                    help="each block's forward pass and loss under torch.autocast(device, torch.bfloat16), the one-line mixed precision")
    a = ap.parse_args()

    config = load_config(a.config)
    d, m, o, opt_cfg, t = (config[k] for k in ("data", "model", "objective", "optim", "train"))
    if a.epochs is not None:
        t["epochs"] = a.epochs
    if a.seed is not None:
        t["seed"] = a.seed
    if a.train_subset is not None:
        d["train_subset"] = a.train_subset
    if a.test_subset is not None:
        d["test_subset"] = a.test_subset
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"train.py: --device {a.device}: torch {torch.__version__} sees no CUDA device")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # as ours (train.flush_denormals = true)
    seed = t["seed"]
    torch.manual_seed(seed)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    train_x, train_y, test_x, test_y, classes = prepare_data(config, a.data_dir)
    test_x, test_y = test_x.to(device), test_y.to(device)
    in_shape = tuple(train_x.shape[1:])
    blocks, dims, pool, pool_input = build_network(config, in_shape)
    head_kind = "pooled" if o["head"] == "auto" else o["head"]  # auto: SLL's own head
    readers, head_dims = head_inputs(head_kind, blocks, in_shape, pool, dims)
    for b in blocks:
        b.train()  # head_inputs traced the blocks in eval mode
    heads = [nn.Linear(dim, classes) for dim in head_dims]
    channels_last = m["kind"] == "cnn" and m["channels_last"]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    blocks = [b.to(device=device, memory_format=fmt) for b in blocks]
    heads = [h.to(device) for h in heads]
    divergence = o["beta"] > 0 and o["prior"] == "previous"
    gen = torch.Generator().manual_seed(seed + 1)
    if divergence:
        in_dim = pool_input(torch.zeros(1, *in_shape)).shape[1]
        proj = [Projection(o["projection"], dim, o["d0"], o["sparse_nonzeros"], gen, a.projection_impl, device)
                for dim in [in_dim] + dims]
    optimizers = [make_optimizer(opt_cfg, list(b.parameters()) + list(h.parameters()), a.optimizer_impl)
                  for b, h in zip(blocks, heads)]
    tau, beta, p = o["tau"], o["beta"], o["dropout"]

    n = train_x.shape[0]
    batch = d["batch_size"]
    steps_per_epoch = -(-n // batch)
    total_steps = steps_per_epoch * t["epochs"]
    shuffle_gen = torch.Generator()
    augment_gen = torch.Generator().manual_seed(seed + 2)
    print(f"pytorch {torch.__version__}: {config['preset']} ({m['kind']}, {len(blocks)} blocks, "
          f"{o['projection']} projection d0 {o['d0']}, {opt_cfg['optimizer']} {opt_cfg['lr']}, {t['epochs']} epochs, "
          f"{n} training examples, {torch.get_num_threads()} threads, {device})", file=sys.stderr)

    amp = (lambda: torch.autocast(device.type, torch.bfloat16)) if a.amp else contextlib.nullcontext

    def step(x, y, lr):
        terms = []
        with torch.no_grad(), amp():
            log_prev = F.log_softmax(proj[0](F.dropout(pool_input(x), p)) / tau, -1) if divergence else None
        h = x
        for i, (block, head, opt) in enumerate(zip(blocks, heads, optimizers)):
            with amp():
                out = block(h.detach())
                u = pool(out)
                ce = F.cross_entropy(head(readers[i](out)), y)
                loss = ce
                if divergence:
                    log_q = F.log_softmax(proj[i + 1](F.dropout(u, p)) / tau, -1)
                    db = bhattacharyya(log_q, log_prev.detach())
                    loss = ce + beta * db
                    log_prev = log_q.detach()
            if divergence:
                terms.append(torch.stack([ce.detach(), db.detach()]))
            else:
                terms.append(torch.stack([ce.detach(), torch.zeros((), device=ce.device)]))
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            h = out.detach()
        return torch.stack(terms)

    def evaluate():
        for b in blocks:
            b.eval()
        correct = torch.zeros(len(blocks), dtype=torch.long, device=device)
        with torch.no_grad():
            for s in range(0, test_x.shape[0], d["eval_batch_size"]):
                h = test_x[s:s + d["eval_batch_size"]]
                y = test_y[s:s + d["eval_batch_size"]]
                if channels_last:
                    h = h.contiguous(memory_format=torch.channels_last)
                for i, (block, head) in enumerate(zip(blocks, heads)):
                    h = block(h)
                    correct[i] += (head(readers[i](h)).argmax(-1) == y).sum()
        for b in blocks:
            b.train()
        return [100.0 * c / test_x.shape[0] for c in correct.tolist()]

    train_seconds = 0.0
    global_step = 0
    for epoch in range(1, t["epochs"] + 1):
        learning_rate = lr_at(opt_cfg, global_step, steps_per_epoch, total_steps)
        sync()
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle_gen.manual_seed(seed * 1_000_003 + epoch))
        sums = torch.zeros(len(blocks), 2, device=device)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            x = augment(train_x.index_select(0, idx), d["augment"], augment_gen)
            x, y = x.to(device, non_blocking=True), train_y.index_select(0, idx).to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sums += step(x, y, lr_at(opt_cfg, global_step, steps_per_epoch, total_steps))
            global_step += 1
        sync()
        epoch_seconds = time.perf_counter() - start
        train_seconds += epoch_seconds
        start = time.perf_counter()
        accuracy = evaluate()
        eval_seconds = time.perf_counter() - start
        sums = (sums / steps_per_epoch).tolist()
        line = {
            "engine": f"pytorch {torch.__version__}",
            "epoch": epoch,
            "seconds": train_seconds,
            "epoch_seconds": epoch_seconds,
            "eval_seconds": eval_seconds,
            "test_accuracy": accuracy[-1],
            "block_test_accuracy": accuracy,
            "learning_rate": learning_rate,
            "train_loss": [{"prediction": ce, "divergence": db} for ce, db in sums],
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
