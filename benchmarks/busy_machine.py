"""How much a CPU training step slows down when another CPU-bound process shares the cores, under libgomp's default
wait policy (idle OpenMP threads spin) and under the policy the `cyclegan-pws` command sets (OMP_WAIT_POLICY=PASSIVE:
idle threads sleep). The step is the demo's (the remover's `demo` preset: region U-Net on pseudo-pairs, batch 8 of
128-px faces, fp32; `--method cyclegan --preset previous` times the CycleGAN recipe before it), on random images,
built by `start_run` like `fit` does.

    python benchmarks/busy_machine.py                      # default vs passive, quiet vs one busy loop, 3 rounds
    python benchmarks/busy_machine.py --policies default,passive,spin10k --rounds 2 --steps 20

Each measurement is a fresh process (the wait policy is read once, when torch loads libgomp), timed over `--steps`
steps after `--warmup`; rounds interleave the policies and quiet/busy runs so that other load hits them alike.
The competitor is a plain Python busy loop (one core's worth of work), as a browser tab or a `pip install` would be.
Reported: s/step (median of the steps of the best round) quiet and busy, and slowdown = busy / quiet per policy.
Sharing 2 cores fairly with one busy process costs a 2-thread run 1.5-2x; spinning threads make it far worse.
"""
import argparse, json, os, statistics, subprocess, sys, time

POLICIES = {  # name: environment set before torch is imported
    'default': {},                                  # libgomp's own: spin ~300k iterations, then sleep
    'passive': {'OMP_WAIT_POLICY': 'PASSIVE'},      # what `cyclegan-pws` sets (nbs/24_cli.ipynb `main`)
    'active': {'OMP_WAIT_POLICY': 'ACTIVE'},        # spin forever: the worst case
    'spin10k': {'GOMP_SPINCOUNT': '10000'},         # spin briefly, then sleep
}


def _batches(a, rc, g):
    "Four random batches for the task `a.method` trains (the remover: faces with landmarks; CycleGAN: A and B images)."
    import torch
    bs = rc.train.batch_size
    if a.method == 'cyclegan':
        return [{k: torch.randint(0, 256, (bs, 3, rc.task.size, rc.task.size), generator=g, dtype=torch.uint8) for k in 'AB'} for _ in range(4)]
    from cyclegan_pws.data import crop_landmarks, landmark_tensor
    size = rc.task.size
    lm = landmark_tensor(crop_landmarks(size))
    return [{'image': torch.randint(0, 256, (bs, 3, size, size), generator=g, dtype=torch.uint8), 'landmarks': lm.expand(bs, 5, 2)}
            for _ in range(4)]


def _task(a, rc, g):
    "The task whose step is timed: the demo's remover (a library of smooth random stains) or a CycleGAN preset."
    import torch
    if a.method == 'cyclegan':
        from cyclegan_pws.cyclegan import CycleGAN
        return CycleGAN(rc.task, seed=0)
    from cyclegan_pws.data import crop_landmarks, landmark_tensor
    from cyclegan_pws.remover import Remover
    size = rc.task.size
    blob = torch.nn.functional.avg_pool2d((torch.rand(16, 1, size, size, generator=g) > 0.97).float(), 15, 1, 7) * 3
    layers = (blob * torch.tensor([-0.1, -0.6, -0.5]).view(1, 3, 1, 1)).half()
    lms = landmark_tensor(crop_landmarks(size)).expand(16, 5, 2).clone()
    return Remover(rc.task, (layers, lms), seed=0)


def child(a):
    "Time `a.steps` demo training steps in this process; print one JSON line."
    import torch
    from cyclegan_pws.config import run_config
    from cyclegan_pws.engine import start_run
    task_opts = {'size': a.size} if a.size else {}
    rc = run_config(a.preset, '.', task=task_opts, train={'threads': a.threads, 'device': 'cpu', 'precision': a.precision},
                    kind='removal' if a.method == 'removal' else 'cyclegan')
    run = start_run(rc.train)
    g = torch.Generator().manual_seed(0)
    task, data = _task(a, rc, g), _batches(a, rc, g)
    times = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        task.step(data[i % len(data)], run); run.end_step()
        if i >= a.warmup: times.append(time.perf_counter() - t)
    print(json.dumps({'s_per_step': statistics.median(times), 'min_s': min(times), 'threads': torch.get_num_threads(),
                      'wait_policy': os.environ.get('OMP_WAIT_POLICY'), 'spincount': os.environ.get('GOMP_SPINCOUNT')}))


def measure(a, policy: str, busy: bool) -> dict:
    "One child process under `policy`, with or without a busy loop beside it."
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OMP_NUM_THREADS')}
    env.update(POLICIES[policy])
    hog = subprocess.Popen([sys.executable, '-c', 'while True: pass']) if busy else None
    try:
        cmd = [sys.executable, __file__, '--child', '--steps', str(a.steps), '--warmup', str(a.warmup), '--preset', a.preset,
               '--method', a.method, '--size', str(a.size), '--precision', a.precision] + (['--threads', str(a.threads)] if a.threads else [])
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    finally:
        if hog: hog.kill(); hog.wait()
    if r.returncode: raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _load() -> float: return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--policies', default='default,passive', help=f'comma-separated: {", ".join(POLICIES)}')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--steps', type=int, default=15)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--preset', default='demo')
    ap.add_argument('--method', default='removal', choices=('removal', 'cyclegan'))
    ap.add_argument('--size', type=int, default=0, help="image side (default: the preset's)")
    ap.add_argument('--precision', default='fp32')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: what start_run picks)')
    ap.add_argument('--json', default=None)
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(a)
    policies = a.policies.split(',')
    res = {p: {'quiet': [], 'busy': []} for p in policies}
    load_before = _load()
    for r in range(a.rounds):
        for p in policies:
            for busy in (False, True):
                m = measure(a, p, busy)
                res[p]['busy' if busy else 'quiet'].append(m)
                print(f'round {r + 1} {p:8s} {"busy " if busy else "quiet"} {m["s_per_step"]:.3f} s/step (threads {m["threads"]}, load {_load():.2f})', flush=True)
    rows = []
    for p in policies:
        q = min(m['s_per_step'] for m in res[p]['quiet']); b = min(m['s_per_step'] for m in res[p]['busy'])
        rows.append({'policy': p, 'env': POLICIES[p], 'quiet_s': round(q, 4), 'busy_s': round(b, 4), 'slowdown': round(b / q, 2)})
    print(f"{'policy':>10} | {'quiet s/step':>12} | {'busy s/step':>11} | {'slowdown':>8}")
    for row in rows: print(f"{row['policy']:>10} | {row['quiet_s']:>12} | {row['busy_s']:>11} | {row['slowdown']:>8}")
    out = {'cpus': len(os.sched_getaffinity(0)), 'load_before': round(load_before, 2), 'load_after': round(_load(), 2),
           'method': a.method, 'preset': a.preset, 'size': a.size, 'precision': a.precision, 'steps': a.steps, 'rounds': a.rounds, 'rows': rows}
    print(json.dumps(out))
    if a.json: open(a.json, 'w').write(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
