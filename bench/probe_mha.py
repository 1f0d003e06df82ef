#!/usr/bin/env python3
"""Why does nn.MultiheadAttention take twice as long alone (layer-wise benchmark's isolated reference) as in the
encoder layer?  Times its forward + backward per call, bf16 autocast, on one GPU, five ways:

  in-network      LayerwiseMeasurementTool(sample="all") over the encoder layer's training steps (GPU-bound)
  alone, fresh    the module called on a fresh (32, 512, 1024) input, q = k = v, grads of its parameters
  alone, fresh, q/k/v copies   the same with three distinct tensors (no self-attention packing)
  captured, loop / graph       layerwise.measure_alone on the inputs the tool captured (the reference's path)

Usage (GPU machine): python3 bench/probe_mha.py   (prints one line per way, ms per call)
"""

import torch
from joulecap import LayerwiseMeasurementTool
from joulecap import layerwise as lw


def timed(fn, n=30):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(n):
        fn()
    e1.record()
    e1.synchronize()
    return e0.elapsed_time(e1) / n


def main():
    dev = torch.device("cuda:0")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(1024, 16, 4096, dropout=0.1, activation=torch.nn.GELU(),
                                             batch_first=True).to(dev)
    x = torch.randn(32, 512, 1024, device=dev)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = layer(x).float().square().mean()
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    tool = LayerwiseMeasurementTool(None, gpu_num=0, sample="all", mode="replay", replay_min_share=0.999,
                                    _keep_run=True)
    tool.start(layer)
    for _ in range(50):
        step()
    res = tool.stop()
    row = res.row("self_attn")
    print("in-network (tool, every step)   %.3f ms per call (fwd %.3f, bwd %.3f)" % (
        1e3 * row["time_s"] / row["calls"], 1e3 * row["forward_time_s"] / row["calls"],
        1e3 * row["backward_time_s"] / row["calls"]), flush=True)
    step_ms = timed(step)
    print("encoder step                    %.3f ms" % step_ms, flush=True)

    mha = layer.self_attn
    # the backward of one MHA call inside the encoder layer: its autograd nodes in execution order, with the GPU
    # time between each node's start and end (events, one synchronisation at the end)
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        box = {}
        h = mha.register_forward_hook(lambda m, a, o: box.setdefault("out", o[0]))
        loss = layer(x).float().square().mean()
        h.remove()
    seen, stack, nodes = set(), [box["out"].grad_fn], []
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen or n._sequence_nr() >= 2**63:
            continue
        seen.add(id(n))
        nodes.append(n)
        stack += [f for f, _ in n.next_functions]
    log = []
    for n in nodes:
        def pre(g, n=n):
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            log.append([n.name(), n._sequence_nr(), e, None, torch.cuda.current_stream().cuda_stream])

        def post(gi, go, n=n):
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            for item in reversed(log):
                if item[1] == n._sequence_nr() and item[3] is None:
                    item[3] = e
                    break
        n.register_prehook(pre)
        n.register_hook(post)
    e_all = torch.cuda.Event(enable_timing=True)
    e_all.record()
    loss.backward()
    torch.cuda.synchronize()
    lowest = min(n._sequence_nr() for n in nodes)
    print("MHA backward nodes in execution order (lowest sequence number %d):" % lowest)
    print("  main thread's stream %#x" % torch.cuda.current_stream().cuda_stream)
    for name, seq, e0, e1, st in log:
        print("  %-40s seq %6d  stream %#x  start +%.3f ms  took %.3f ms%s" % (
            name, seq, st, e_all.elapsed_time(e0), e0.elapsed_time(e1) if e1 is not None else float("nan"),
            "   <- lowest" if seq == lowest else ""))
    # the tool's markers over one training step (nothing resolved before the end): where its intervals fall
    tool2 = LayerwiseMeasurementTool(None, gpu_num=0, sample="all", resolve_interval_s=1e6, max_pending=1 << 20)
    tool2.start(layer)
    step()
    run2 = tool2._run
    torch.cuda.synchronize()
    run2.clock.convert(run2.mt, run2.k, True)
    names = {}
    for r, row in enumerate(run2.rows):
        names[2 * r], names[2 * r + 1] = row.name + " fwd", row.name + " bwd"
    t0 = run2.mt[0]
    print("tool markers over one step (time from start, slot from then on):")
    for t, sl in zip(run2.mt, run2.ms):
        print("  +%8.3f ms  %s" % ((t - t0) * 1e-6, names.get(sl, sl)))
    tool2.stop()
    params = [p for p in mha.parameters() if p.requires_grad]
    g = torch.randn(32, 512, 1024, device=dev, dtype=torch.bfloat16)

    def alone(q, k, v):
        def f():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = mha(q, k, v, need_weights=False)[0]
            torch.autograd.grad(out, params, grad_outputs=g.to(out.dtype))
        return f

    print("alone, fresh, q = k = v         %.3f ms" % timed(alone(x, x, x)), flush=True)
    print("alone, fresh, q/k/v copies      %.3f ms" % timed(alone(x, x.clone(), x.clone())), flush=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fwd = timed(lambda: mha(x, x, x, need_weights=False))
    print("alone, forward only             %.3f ms" % fwd, flush=True)

    run = tool._last_run
    r = next(r for r in run.captures if run.rows[r].name == "self_attn")
    cap = run.captures[r]
    print("captured: args %s kwargs %s training %s autocast %s grads %s" % (
        [(a.shape, a.dtype, a.requires_grad) if isinstance(a, lw._TensorSpec) else a for a in cap.args],
        {k: v for k, v in cap.kwargs.items()}, cap.training, cap.autocast, sorted(cap.grads)), flush=True)
    ctx = tool._ctx if not tool._ctx.closed else None
    if ctx is None:
        from joulecap import _joulecap
        ctx = _joulecap.Context("0")
    for graph in (False,):
        m = lw.measure_alone(torch, ctx, mha, cap, lw.TRAIN, True, 0.5, "cuda", dev, graph=graph)
        print("captured, %-5s                 %.3f ms per call (graph used: %s)" % (
            "graph" if graph else "loop", 1e3 * m["seconds"] / m["iterations"], m["graph"]), flush=True)


if __name__ == "__main__":
    main()
