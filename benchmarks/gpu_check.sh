#!/usr/bin/env bash
# Prove ganforge's CUDA path on a GPU machine, in under 5 minutes. Run from the repo root:
#
#     bash benchmarks/gpu_check.sh            # outputs under ${OUT:-benchmarks/results}
#
# 1. venv: uses .venv if it exists (installs the project into it if it cannot import it),
#    else creates it with `pip install -e ./clients/python -e .`
# 2. prints nvidia-smi and torch.cuda facts; FAILS (exit 1) if CUDA is not available
# 3. trains the default DCGAN ('shapes', 32px, batch 64, EMA + DiffAugment) through
#    gan_core.training.train for $GPU_CHECK_STEPS steps on cuda: bf16, then fp32; asserts
#    success and finite losses, loads the checkpoint on cuda and writes a PNG grid
# 4. runs benchmarks/train_throughput.py --device cuda at fp32 (with --profile) and bf16; its
#    engine_width32/engine ratio says whether width 32 (the config default, chosen on a CPU)
#    is also cheaper per step on the GPU, or whether a GPU job should pass 64
#
# 5. issue 19's resnet nets at 64px: train_throughput.py --arch resnet, engine against a bare
#    loop of the same nets, fp32 and bf16, at widths 32 and 64 (the width ratio)
# 6. the NCCL code path's single-GPU case: a process group of world 1 (NCCL on cuda, gloo on
#    cpu); its collectives (average_gradients, share_step, sum_across, decide, sync BatchNorm
#    forward and backward) against the plain computation; train(dist=ctx), which at world 1
#    takes the single-process path, and train() forced onto the group path (every collective
#    of a step through NCCL), each against train() alone; then `ganforge train --devices 1`
#
# Exit status: 0 only if every step passed. Overrides (for a smoke test without a GPU):
#   GPU_CHECK_DEVICE=cpu  run everything on the CPU (precision fp32 only, tiny throughput run)
#   GPU_CHECK_STEPS=N     training steps per precision (default 300)
#   GPU_CHECK_PYTHON=X    use interpreter X with the repo on PYTHONPATH, no venv: the lent GPU
#                         machine's own python3 (torch there; no network). Carry the wheels it
#                         lacks (../shared/tools/gpu/wheels.sh prints the line that installs
#                         them), then, as one command (a few files come back, so tar them):
#     GPU_CHECK_PYTHON=python3 OUT=/tmp/gc bash benchmarks/gpu_check.sh; tar czf $OUT/gc.tgz -C /tmp gc
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-benchmarks/results}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
STEPS="${GPU_CHECK_STEPS:-300}"
mkdir -p "$OUT"
START=$SECONDS

say() { printf '\n=== %s (t=%ss)\n' "$*" "$((SECONDS - START))"; }
die() { DIED=1; printf '\n!!! GPU CHECK FAILED: %s\n' "$*" >&2; exit 1; }
# Any other failing command (set -e, a failed assert, a timeout) also ends loudly.
trap 'rc=$?; if [ $rc -ne 0 ] && [ -z "${DIED:-}" ]; then printf "\n!!! GPU CHECK FAILED (exit %s)\n" "$rc" >&2; fi' EXIT

case "$DEVICE" in
  cuda) PRECISIONS="bf16 fp32"; TT_ARGS=() ;;
  cpu)  PRECISIONS="fp32"; TT_ARGS=(--steps 2 --warmup 1 --rounds 1 --threads 1)
        echo "GPU_CHECK_DEVICE=cpu: smoke test of this script only -- proves nothing about CUDA" ;;
  *)    die "GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'" ;;
esac

# ---------------------------------------------------------------- 1. environment
say "python environment"
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PY="$GPU_CHECK_PYTHON"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c 'import gan_core' || die "$PY cannot import gan_core with the repo on PYTHONPATH"
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
  if ! "$PY" -c 'import gan_core, app, worker, ganforge_client' 2>/dev/null; then
    echo ".venv cannot import ganforge: installing it (pip install -e ./clients/python -e .)"
    timeout 600 "$PY" -m pip install -q -e ./clients/python -e . \
      || die "pip install -e ./clients/python -e . into .venv failed"
  fi
else
  echo "no .venv: creating one (pip install -e ./clients/python -e .; torch is large)"
  python3 -m venv .venv
  timeout 600 .venv/bin/python -m pip install -q -e ./clients/python -e . \
    || die "pip install -e ./clients/python -e . failed"
  PY=.venv/bin/python
fi
"$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'

# ---------------------------------------------------------------- 2. the GPU
say "nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi || { [ "$DEVICE" = cpu ] || die "nvidia-smi failed"; }
else
  [ "$DEVICE" = cpu ] && echo "(no nvidia-smi; fine for a cpu smoke test)" || echo "WARNING: nvidia-smi not on PATH"
fi

say "torch.cuda"
"$PY" - "$DEVICE" <<'PY' || die "CUDA is not available to torch"
import sys, torch
device = sys.argv[1]
print("torch", torch.__version__, "built for CUDA", torch.version.cuda)
print("cuda available:", torch.cuda.is_available(), "| devices:", torch.cuda.device_count())
if device == "cuda":
    if not torch.cuda.is_available():
        print("ERROR: torch.cuda.is_available() is False (driver? CPU-only torch build?)", file=sys.stderr)
        sys.exit(1)
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB")
    print("cudnn", torch.backends.cudnn.version(), "| bf16 supported:", torch.cuda.is_bf16_supported())
    x = torch.randn(256, 256, device="cuda")
    torch.testing.assert_close((x @ x).cpu(), x.cpu() @ x.cpu(), rtol=1e-2, atol=1e-2)  # a real kernel ran
    print("a matmul on cuda matches the CPU")
PY

# ---------------------------------------------------------------- 3. train + sample on the device
for P in $PRECISIONS; do
  say "train the default DCGAN: $STEPS steps, device $DEVICE, precision $P"
  timeout 120 "$PY" - "$DEVICE" "$P" "$STEPS" "$OUT" <<'PY' 2>&1 | tee "$OUT/gpu_check_train_${DEVICE}_${P}.log"
import io, json, math, sys, tempfile, time
from pathlib import Path
import torch
from PIL import Image
from gan_core.checkpoint import config_from_meta, load_generator, read_meta
from gan_core.config import TrainConfig
from gan_core.sampling import png_grid, sample
from gan_core.training import TrainHooks, train

device, precision, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
reports = []
def on_progress(p):
    reports.append(p)
    if len(reports) == 1 or p.step == steps or len(reports) % 5 == 0:
        print(f"  step {p.step:5d}/{p.total_steps}  d {p.losses['d']:.4f}  g {p.losses['g']:.4f}  "
              f"{p.images_per_sec:8.0f} img/s", flush=True)

cfg = TrainConfig(dataset="shapes", image_size=32, steps=steps, device=device, precision=precision,
                  checkpoint_every=steps, g_width=64, d_width=64)  # else the defaults (batch 64, EMA)
with tempfile.TemporaryDirectory() as run_dir:
    t0 = time.perf_counter()
    result = train(cfg, run_dir, TrainHooks(on_progress=on_progress, progress_interval=1.0))
    wall = time.perf_counter() - t0
    assert result.status == "succeeded", result
    assert result.step == steps, (result.step, steps)
    assert reports and reports[-1].step == steps, "no final progress report"
    for p in reports:
        assert all(math.isfinite(v) for v in p.losses.values()), f"non-finite loss at step {p.step}: {p.losses}"
    ckpt = result.checkpoint
    assert ckpt is not None and ckpt.is_dir(), ckpt
    saved = config_from_meta(read_meta(ckpt))  # verifies the sha256s too
    assert (saved.device, saved.precision) == (device, precision), (saved.device, saved.precision)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        assert peak > 0, "nothing was allocated on the GPU: training did not run there"
        print(f"  peak CUDA memory {peak / 2**20:.0f} MiB")
    G = load_generator(ckpt, device=device)
    assert next(G.parameters()).device.type == device
    t1 = time.perf_counter()
    images = sample(G, 64, seed=0)
    data = png_grid(images, nrow=8)
    t_sample = time.perf_counter() - t1
    assert torch.isfinite(images).all() and images.abs().max() <= 1.0
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG" and im.size == (8 * 34 + 2, 8 * 34 + 2), (im.format, im.size)
    png = out / f"gpu_check_samples_{device}_{precision}.png"
    png.write_bytes(data)
    rates = [p.images_per_sec for p in reports[1:-1]] or [reports[-1].images_per_sec]
    summary = {"device": device, "precision": precision, "steps": steps, "wall_s": wall,
               "final_losses": reports[-1].losses, "median_reported_images_per_sec": sorted(rates)[len(rates) // 2],
               "sample_64_png_s": t_sample, "png": str(png),
               "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}
    (out / f"gpu_check_train_{device}_{precision}.json").write_text(json.dumps(summary, indent=2))
    print("  OK", json.dumps(summary))
PY
done

# ---------------------------------------------------------------- 4. throughput, engine vs bare
say "train_throughput.py --device $DEVICE --precision fp32 --profile"
timeout 120 "$PY" benchmarks/train_throughput.py --device "$DEVICE" --precision fp32 --profile "${TT_ARGS[@]}" \
  --out "$OUT/train_throughput_${DEVICE}_fp32.json" 2>&1 | tee "$OUT/train_throughput_${DEVICE}_fp32.log"
if [ "$DEVICE" = cuda ]; then
  say "train_throughput.py --device cuda --precision bf16"
  timeout 90 "$PY" benchmarks/train_throughput.py --device cuda --precision bf16 "${TT_ARGS[@]}" \
    --out "$OUT/train_throughput_cuda_bf16.json" 2>&1 | tee "$OUT/train_throughput_cuda_bf16.log"
fi

# ---------------------------------------------------------------- 5. resnet at 64px (issue 19)
# (the CPU smoke test runs one tiny 16px case: a 64px resnet step takes many seconds on a CPU)
if [ "$DEVICE" = cuda ]; then RESNET_RUNS="fp32:32 fp32:64 bf16:32 bf16:64"; RSIZE=64; else RESNET_RUNS="fp32:32"; RSIZE=16; fi
for RUN in $RESNET_RUNS; do
  P=${RUN%%:*}; W=${RUN##*:}
  say "train_throughput.py --device $DEVICE --arch resnet --image-size $RSIZE --width $W --precision $P"
  timeout 120 "$PY" benchmarks/train_throughput.py --device "$DEVICE" --arch resnet --image-size "$RSIZE" \
    --width "$W" --precision "$P" --variants engine,bare "${TT_ARGS[@]}" \
    --out "$OUT/train_throughput_resnet${RSIZE}_${DEVICE}_${P}_w${W}.json" 2>&1 \
    | tee "$OUT/train_throughput_resnet${RSIZE}_${DEVICE}_${P}_w${W}.log"
done

# ---------------------------------------------------------------- 6. NCCL, world 1
# A world of one is all one GPU can hold. gan_core.distributed.group_of drops a world of one
# to the single-process path (no collective runs), so the check also forces the group path
# (group_of patched in this process only) to put every collective of a training step
# through the backend: gradient all_reduce, sync BatchNorm, the per-step share, the barrier.
if [ "$DEVICE" = cuda ]; then DSIZE=32; else DSIZE=16; fi
say "process group of world 1 ($([ "$DEVICE" = cuda ] && echo nccl || echo gloo)): collectives and train(dist=ctx) against one process"
timeout 120 "$PY" - "$DEVICE" "$DSIZE" <<'PY' 2>&1 | tee "$OUT/gpu_check_world1_${DEVICE}.log"
import contextlib, math, sys, tempfile
from datetime import timedelta
from pathlib import Path
import torch, torch.distributed as torch_dist
from torch import nn
import gan_core.monitor, gan_core.state, gan_core.training
from gan_core.checkpoint import load_generator
from gan_core.config import TrainConfig
from gan_core.data import load_dataset
from gan_core.distributed import DistContext, group_of
from gan_core.sync_batchnorm import SyncBatchNorm
from gan_core.training import TrainHooks, train

device, size = sys.argv[1], int(sys.argv[2])
backend = "nccl" if device == "cuda" else "gloo"
# the group path is the same maths summed in another order (BatchNorm statistics from sums;
# cuDNN's own kernel choices on cuda): float rounding, which Adam amplifies where a gradient is
# near zero (measured 4e-5 after 6 CPU steps at 16 px; one Adam step moves a weight by up to
# lr = 8e-4, so a wrong step would show). Step 1's losses come before any drift.
tol, tol_step1 = (1e-3, 1e-4) if device == "cuda" else (3e-4, 1e-5)

def worst(a, b):
    """Largest |a - b| over tensors, scaled by max(1, |a|)."""
    return max(((x.float() - y.float()).abs() / x.float().abs().clamp_min(1)).max().item()
               for x, y in zip(a, b))

with tempfile.TemporaryDirectory() as tmp:
    if device == "cuda":
        torch.cuda.set_device(0)
    store = torch_dist.FileStore(str(Path(tmp) / "store"), 1)
    torch_dist.init_process_group(backend, store=store, rank=0, world_size=1,
                                  timeout=timedelta(seconds=60))
    ctx = DistContext.current()
    assert ctx is not None and (ctx.rank, ctx.world) == (0, 1), ctx
    assert torch_dist.get_backend() == backend and ctx.device.type == device, ctx.device
    assert group_of(ctx) is None, "a world of one should train on the single-process path"

    # the collectives one by one, against what one process computes
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
    net(torch.randn(4, 8, device=device)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    ctx.average_gradients(net)
    assert worst(grads, [p.grad for p in net.parameters()]) == 0.0, "average_gradients changed them"
    (d, g), stop = ctx.share_step(torch.tensor([0.25, -1.5], device=device), True)
    assert (d, g, stop) == (0.25, -1.5, True), (d, g, stop)
    t = torch.arange(5.0, device=device)
    assert torch.equal(ctx.sum_across(t), t) and ctx.decide(True) and not ctx.decide(False)
    ctx.barrier()
    x = torch.randn(8, 6, 5, 5, device=device)
    plain = nn.BatchNorm2d(6).to(device)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5); plain.bias.uniform_(-0.5, 0.5)
    synced = SyncBatchNorm(nn.BatchNorm2d(6).to(device), ctx.group)
    synced.load_state_dict(plain.state_dict())
    outs, ins = [], []
    for bn in (plain, synced):
        xi = x.clone().requires_grad_(True)
        y = bn(xi)
        (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
        outs.append([y, bn.running_mean, bn.running_var]); ins.append([xi.grad, bn.weight.grad, bn.bias.grad])
    assert all(torch.isfinite(v).all() for v in outs[1] + ins[1])
    err_bn = max(worst(outs[0], outs[1]), worst(ins[0], ins[1]))
    assert err_bn < 1e-4, f"sync BatchNorm differs from BatchNorm by {err_bn:.2e}"
    print(f"  collectives OK ({backend}); sync BatchNorm vs BatchNorm forward+backward: {err_bn:.1e}")

    # training: alone, with dist=ctx (world 1: the single-process path), forced onto the group path
    data = load_dataset("shapes", image_size=size, max_items=256)
    cfg = TrainConfig(dataset="shapes", image_size=size, steps=6, checkpoint_every=6,
                      device=device, precision="fp32", devices=1)

    @contextlib.contextmanager
    def group_path():
        forced = lambda dist: dist  # noqa: E731 -- group_of without the world > 1 test
        saved = [(m, m.group_of) for m in (gan_core.training, gan_core.state, gan_core.monitor)]
        for m, _ in saved:
            m.group_of = forced
        try:
            yield
        finally:
            for m, f in saved:
                m.group_of = f

    def run(name, dist, forced=False):
        reports = []
        hooks = TrainHooks(on_progress=reports.append, progress_interval=0.0)
        with group_path() if forced else contextlib.nullcontext():
            result = train(cfg, Path(tmp) / name, hooks, dataset=data, resume=False, dist=dist)
        assert result.status == "succeeded" and result.step == cfg.steps, result
        assert all(math.isfinite(v) for p in reports for v in p.losses.values()), reports
        nets = [load_generator(result.checkpoint, ema=e, device=device).state_dict() for e in (False, True)]
        first = torch.tensor([reports[0].losses["d"], reports[0].losses["g"]])
        return [v for n in nets for v in n.values()], first, reports[-1].losses

    alone, first, losses = run("alone", None)
    for name, forced in (("dist_world1", False), ("group_path", True)):
        nets, f, last = run(name, ctx, forced)
        err, err1 = worst(alone, nets), worst([first], [f])
        print(f"  train(dist=ctx{', group path' if forced else ''}) vs alone: step 1 losses "
              f"differ by {err1:.1e} (tolerance {tol_step1:g}); weights after {cfg.steps} steps "
              f"by {err:.1e} (tolerance {tol:g}); last losses {last} vs {losses}")
        assert err1 <= tol_step1, f"{name}: step 1 losses differ from one process by {err1:.2e}"
        assert err <= tol, f"{name}: weights differ from one process by {err:.2e}"
    torch_dist.destroy_process_group()
    print("  OK")
PY
say "ganforge train --devices 1 --set device=$DEVICE"
RUN1="$(mktemp -d)"
timeout 120 "$PY" -c 'import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))' train \
  --devices 1 --set device="$DEVICE" --set dataset=shapes --set image_size="$DSIZE" --set steps=4 \
  --set checkpoint_every=4 --no-progress --out "$RUN1" 2>&1 | tee "$OUT/gpu_check_devices1_${DEVICE}.log"
"$PY" - "$RUN1" "$DEVICE" <<'PY'
import sys
from gan_core.checkpoint import config_from_meta, latest_checkpoint, read_meta
ckpt = latest_checkpoint(sys.argv[1])
assert ckpt is not None, "ganforge train --devices 1 wrote no checkpoint"
cfg = config_from_meta(read_meta(ckpt))
assert (cfg.devices, cfg.device, cfg.steps) == (1, sys.argv[2], 4), (cfg.devices, cfg.device, cfg.steps)
print("  OK", ckpt)
PY
rm -rf "$RUN1"

say "GPU CHECK PASSED ($DEVICE) -- outputs in $OUT"
ls -l "$OUT"
