"""The machine's own bf16/fp32 ratios in PyTorch: a 2048³ matrix product and a 3×3
convolution 64→64 on a 128×64×32×32 batch, in fp32, in bf16 and under
`torch.autocast("cpu", torch.bfloat16)`; the convolution forward in the NCHW layout
and channels-last (what oneDNN runs fastest, and what sll's CNNs use), and a training
convolution (forward, and backward to the weights and the input) channels-last.
GFLOP/s, median of `--rounds`.

    ~/torch-venv/bin/python bench/reference/machine.py [--threads 2] [--rounds 5] [--json]

What docs/performance.md compares `sll bench step --precision bf16` against: a step
cannot gain more from bf16 than the machine's products and convolutions do.
"""
import argparse
import json
import statistics
import time

import torch


def rate(fn, flops, rounds, inner):
    fn()
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append(flops * inner / (time.perf_counter() - start) / 1e9)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    gemm_flops = 2 * n**3
    x = torch.randn(128, 64, 32, 32)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    conv16 = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).bfloat16()
    x16 = x.bfloat16()
    conv_flops = 2 * 128 * 64 * 64 * 9 * 32 * 32
    cl = torch.channels_last
    xc, xc16 = x.to(memory_format=cl), x16.to(memory_format=cl)
    convc = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(memory_format=cl)
    convc16 = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).bfloat16().to(memory_format=cl)

    def train(conv, x):
        x = x.detach().requires_grad_()

        def run():
            conv.zero_grad(set_to_none=True)
            conv(x).sum().backward()
        return run

    def autocast(fn):
        def run():
            with torch.autocast("cpu", torch.bfloat16):
                return fn()
        return run

    with torch.no_grad():
        out = {
            "gemm_fp32": rate(lambda: a @ b, gemm_flops, args.rounds, 3),
            "gemm_bf16": rate(lambda: a16 @ b16, gemm_flops, args.rounds, 3),
            "gemm_autocast": rate(autocast(lambda: a @ b), gemm_flops, args.rounds, 3),
            "conv_fp32": rate(lambda: conv(x), conv_flops, args.rounds, 2),
            "conv_bf16": rate(lambda: conv16(x16), conv_flops, args.rounds, 2),
            "conv_autocast": rate(autocast(lambda: conv(x)), conv_flops, args.rounds, 2),
            "conv_cl_fp32": rate(lambda: convc(xc), conv_flops, args.rounds, 2),
            "conv_cl_bf16": rate(lambda: convc16(xc16), conv_flops, args.rounds, 2),
        }
    out["convtrain_cl_fp32"] = rate(train(convc, xc), 3 * conv_flops, args.rounds, 1)
    out["convtrain_cl_bf16"] = rate(train(convc16, xc16), 3 * conv_flops, args.rounds, 1)
    out["gemm_ratio"] = out["gemm_bf16"] / out["gemm_fp32"]
    out["conv_ratio"] = out["conv_bf16"] / out["conv_fp32"]
    out["conv_autocast_ratio"] = out["conv_autocast"] / out["conv_fp32"]
    out["conv_cl_ratio"] = out["conv_cl_bf16"] / out["conv_cl_fp32"]
    out["convtrain_cl_ratio"] = out["convtrain_cl_bf16"] / out["convtrain_cl_fp32"]
    out["threads"] = args.threads
    out["torch"] = torch.__version__
    if args.json:
        print(json.dumps(out))
        return
    for op in ("gemm", "conv"):
        print(
            f"{op}: fp32 {out[op + '_fp32']:.0f} GFLOP/s, bf16 {out[op + '_bf16']:.0f} "
            f"({out[op + '_ratio']:.2f}x), autocast {out[op + '_autocast']:.0f}"
        )
    for op, what in (("conv_cl", "conv channels-last"), ("convtrain_cl", "conv fwd+bwd channels-last")):
        print(f"{what}: fp32 {out[op + '_fp32']:.0f} GFLOP/s, bf16 {out[op + '_bf16']:.0f} ({out[op + '_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
