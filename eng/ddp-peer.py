#!/usr/bin/python3
"""PyTorch DDP as a peer of the cluster benchmark: the same models, data and recipe as `ClusterBenchmark`'s C# worker,
trained with torch.nn.parallel.DistributedDataParallel over gloo, one process per emulated host.

  ddp-peer.py --rank R --world N --master ADDR [--model wide-mlp|convnet|convnet-small] [--hook none|fp16|powersgd-r1|...]
              [--steps 400] [--eval-every N --target-accuracy 0.8] [--link-mbps M] [--data DIR]

Rank 0 prints one line `RESULT {json}` with the fields the benchmark's report reads. The recipe matches the C# worker's:
batch 32 per host, SGD with momentum 0.9, learning rate 0.05 with 50 warm-up steps then a cosine decay over the run,
Fashion-MNIST pixels / 255, seed 1. Times are per step over all but the first evaluation interval (or the first half).
"""
import argparse
import gzip
import json
import math
import os
import struct
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

DEBIAN_DATA = "/usr/share/datasets/fashion-mnist"
BATCH, LR, WARMUP, MOMENTUM, SEED = 32, 0.05, 50, 0.9, 1


def read_idx(directory, name):
    for path in (os.path.join(directory, name), os.path.join(directory, name + ".gz")):
        if os.path.exists(path):
            with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
                data = f.read()
            ndim = data[3]
            dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
            return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)
    raise FileNotFoundError(f"{name} not in {directory} (install dataset-fashion-mnist)")


def load(directory, train, limit=None):
    prefix = "train" if train else "t10k"
    images = read_idx(directory, f"{prefix}-images-idx3-ubyte").float().div_(255).reshape(-1, 784)
    labels = read_idx(directory, f"{prefix}-labels-idx1-ubyte").long()
    return (images[:limit], labels[:limit]) if limit else (images, labels)


def model_for(name):
    # The C# SIDCoModels definitions: Mlp(2048, 2048) and ConvNet(conv1, conv2, hidden) with 5x5 kernels and 2x2 pooling.
    if name == "wide-mlp":
        return nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
    conv1, conv2, hidden = (32, 64, 256) if name in ("convnet", "convnet-wide") else (16, 32, 128)
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, conv1, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(conv1, conv2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(conv2 * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def descriptor(name):
    # The C# model descriptors, so that the report puts both peers' rows in one table.
    if name == "wide-mlp":
        return "mlp:layers=2,h0=2048,h1=2048"
    conv1, conv2, hidden = (32, 64, 256) if name in ("convnet", "convnet-wide") else (16, 32, 128)
    return f"convnet:height=28,width=28,channels=1,conv1={conv1},conv2={conv2},hidden={hidden}"


def learning_rate(step, total):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = 1.0 if total <= WARMUP else (step - WARMUP) / (total - WARMUP)
    return LR * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def bytes_per_step(model, hook, world):
    # What each rank sends in a ring allreduce (2 (P - 1) / P of the payload), as the C# benchmark counts it.
    ring = 2.0 * (world - 1) / world
    params = [p for p in model.parameters()]
    if hook == "none":
        return ring * 4 * sum(p.numel() for p in params)
    if hook == "fp16":
        return ring * 2 * sum(p.numel() for p in params)
    rank = int(hook.split("-r")[1])
    total = 0
    for p in params:
        if p.dim() >= 2:
            rows, cols = p.shape[0], p.numel() // p.shape[0]
            # PyTorch's hook compresses a matrix only when that saves entries; the rest goes dense.
            total += (rows + cols) * rank if (rows + cols) * rank < rows * cols else rows * cols
        else:
            total += p.numel()
    return ring * 4 * total


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--rank", type=int, required=True)
    a.add_argument("--world", type=int, required=True)
    a.add_argument("--master", required=True)
    a.add_argument("--port", default="29517")
    a.add_argument("--model", default="wide-mlp")
    a.add_argument("--hook", default="none")
    a.add_argument("--steps", type=int, default=400)
    a.add_argument("--eval-every", type=int, default=0)
    a.add_argument("--target-accuracy", type=float, default=0.8)
    a.add_argument("--eval-limit", type=int, default=2000)
    a.add_argument("--test-limit", type=int, default=10000)
    a.add_argument("--link-mbps", type=int, default=0)
    a.add_argument("--data", default=DEBIAN_DATA)
    a.add_argument("--bucket-mb", type=float, default=25)
    args = a.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("MASTER_ADDR", args.master)
    os.environ.setdefault("MASTER_PORT", args.port)
    dist.init_process_group("gloo", rank=args.rank, world_size=args.world)
    torch.manual_seed(SEED)
    model = model_for(args.model)
    if args.hook.startswith("powersgd-r"):
        # torch 1.13's PowerSGD hook over gloo fails when two buckets' allreduces are in flight at once ("op.preamble.length
        # <= op.nbytes" in gloo's tcp pair): give the PowerSGD runs one bucket by raising DDP's 1 MiB first-bucket cap.
        dist._DEFAULT_FIRST_BUCKET_BYTES = int(args.bucket_mb * (1 << 20))
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)
    if args.hook == "fp16":
        ddp.register_comm_hook(dist.group.WORLD, default_hooks.fp16_compress_hook)
    elif args.hook.startswith("powersgd-r"):
        state = powerSGD_hook.PowerSGDState(process_group=dist.group.WORLD,
                                             matrix_approximation_rank=int(args.hook.split("-r")[1]),
                                             start_powerSGD_iter=10, use_error_feedback=True, warm_start=True)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    elif args.hook != "none":
        raise SystemExit(f"unknown --hook {args.hook}: none, fp16, powersgd-rR")
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM)

    x_train, y_train = load(args.data, train=True)
    x_test, y_test = load(args.data, train=False, limit=args.test_limit)
    x_eval, y_eval = x_test[:args.eval_limit], y_test[:args.eval_limit]
    per_rank = len(x_train) // args.world
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(SEED))
    interval = args.eval_every if args.eval_every > 0 else (args.steps + 1) // 2

    def accuracy(x, y):
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()

    training_seconds, timed_seconds, timed_steps, to_target = 0.0, 0.0, 0, None
    dist.barrier()
    for step in range(args.steps):
        epoch_step = step % (per_rank // BATCH)
        if epoch_step == 0 and step > 0:
            order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(SEED + step))
        # The workers take turns along one shared order, as the C# trainer does.
        rows = order[(epoch_step * BATCH + torch.arange(BATCH)) * args.world + args.rank]
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps)
        optimizer.zero_grad()
        F.cross_entropy(ddp(x_train[rows]), y_train[rows]).backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        training_seconds += elapsed
        if step >= interval:
            timed_seconds += elapsed
            timed_steps += 1
        if args.eval_every > 0 and (step + 1) % args.eval_every == 0 and to_target is None:
            if accuracy(x_eval, y_eval) >= args.target_accuracy:
                to_target = training_seconds

    test_accuracy = accuracy(x_test, y_test)
    if args.rank == 0:
        step_ms = 1000 * timed_seconds / max(1, timed_steps)
        row = {
            "compressor": "ddp-" + args.hook, "density": 1.0, "hosts": args.world, "linkMbps": args.link_mbps,
            "stepMs": step_ms, "computeMs": 0.0, "compressMs": 0.0, "communicateMs": 0.0, "predictedCommunicateMs": 0.0,
            "bytesPerStep": bytes_per_step(model, args.hook, args.world), "testAccuracy": test_accuracy, "steps": args.steps,
            "examplesPerSecond": args.world * BATCH / step_ms * 1000, "alphaUs": 0.0, "betaNsPerByte": 0.0,
            "parameters": sum(p.numel() for p in model.parameters()), "model": descriptor(args.model), "sparseFraction": 0.0,
            "timedSteps": timed_steps, "torchThreads": torch.get_num_threads(), "schedule": "cosine", "wire": "fp32",
            "targetAccuracy": args.target_accuracy if args.eval_every > 0 else None, "timeToTargetSeconds": to_target,
            "evalEvery": args.eval_every or None, "peer": "pytorch " + torch.__version__,
        }
        print("RESULT " + json.dumps(row), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
