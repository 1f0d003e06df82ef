#!/usr/bin/env python3
"""Step time of ResNet-50 training with and without LayerwiseMeasurementTool, for profiling the hooks' host cost.

torchvision ResNet-50, batch 64 at 224x224, bf16 autocast, channels_last, SGD + momentum, synthetic data.
Phases (each --steps steps after --warmup steps): plain; no-op hooks of the same shape as the tool's (forward
pre/post hooks with kwargs on every leaf layer, a prehook and a hook on the output's autograd node), which is
PyTorch's own hook machinery; hostmark, the tool with host-clock markers in place of CUDA events; the tool
at leaf depth.  Meant to run under py-spy:

    py-spy record --native -r 500 -f raw -o prof.txt -- python3 bench/profile_layerwise.py

Prints one line per phase (ms per step, median of 10-step chunks) and the overheads against plain.
"""

import argparse
import statistics
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--phases", default="plain,noop,hostmark,tool",
                    help="comma-separated: plain, noop, hostmark (the tool with host-clock markers instead of CUDA "
                         "events: its Python logic without the events' cost), tool")
    ap.add_argument("--depth", type=int, default=None, help="the tool's depth (default: leaf layers)")
    ap.add_argument("--cpu", action="store_true", help="tiny run on the CPU (fake NVML), to check the script")
    args = ap.parse_args(argv)

    import torch
    import torchvision
    from joulecap import LayerwiseMeasurementTool
    from joulecap.layerwise import select_layers

    dev = torch.device("cpu" if args.cpu else "cuda:0")
    size, batch = (64, 2) if args.cpu else (224, args.batch)
    model = torchvision.models.resnet50().to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=dev)
    if dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def run(n):
        times = []
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            step()
            if (i + 1) % 10 == 0:
                sync()
                t1 = time.perf_counter()
                times.append((t1 - t0) / 10)
                t0 = t1
        sync()
        return times

    def noop_hooks():
        handles = []

        def on_node(*a):
            return None

        def pre(mod, args, kwargs):
            return None

        def post(mod, args, kwargs, out):
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                out.grad_fn.register_prehook(on_node)
                out.grad_fn.register_hook(on_node)

        for _, m in select_layers(model, args.depth):
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True, always_call=True))
        return handles

    run(args.warmup)
    res = {}
    for ph in args.phases.split(","):
        tool = handles = None
        if ph == "noop":
            handles = noop_hooks()
        elif ph in ("tool", "hostmark"):
            import joulecap.layerwise as lw

            orig = lw._CudaClock._fast_mark
            if ph == "hostmark":
                lw._CudaClock._fast_mark = lambda self: self.now  # markers are host ns (convert() keeps ints)
            tool = LayerwiseMeasurementTool(None, gpu_num=None if args.cpu else 0, depth=args.depth)
            tool.start(model)
            lw._CudaClock._fast_mark = orig
        run(3)
        tp = time.process_time()
        t = run(args.steps)
        cpu = (time.process_time() - tp) / args.steps
        if tool is not None:
            r = tool.stop()
            print("tool: %d layers, clock %s" % (len(select_layers(model, args.depth)), r.clock), flush=True)
        if handles:
            for h in handles:
                h.remove()
        res[ph] = statistics.median(t)
        print("%-6s %8.2f ms/step (median of %d chunks; min %.2f max %.2f), process CPU %.2f ms/step"
              % (ph, res[ph] * 1e3, len(t), min(t) * 1e3, max(t) * 1e3, cpu * 1e3), flush=True)
    if "plain" in res:
        nl = len(select_layers(model, args.depth))
        for ph in res:
            if ph != "plain":
                d = res[ph] - res["plain"]
                print("overhead %-6s %+7.2f%%  (%+.2f ms/step, %.1f us per layer call)"
                      % (ph, 100 * d / res["plain"], d * 1e3, d * 1e6 / nl), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
