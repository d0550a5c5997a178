"Helpers shared by the tests of the tasks that train on the engine."
import torch

from cyclegan_pws.engine import fit


class Stop(Exception):
    "Raised from `on_log` to end a run right after a checkpoint, as a crash or a killed Kaggle session would."


def fit_until(task, dataset, cfg, out, stop_at=None, resume=None):
    "`fit` without a progress bar, ended abruptly after the log step `stop_at` (None: run to the end)."
    def on_log(rec):
        if rec['step'] == stop_at: raise Stop
    try: fit(task, dataset, cfg, out, resume=resume, progress=False, on_log=on_log)
    except Stop: pass
    return task


def assert_same_training_state(a, b):
    "Tasks `a` and `b` hold bit-identical weights, buffers and Adam moments."
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f'differ after resume: {diff[:5]}'
    for name, opt in a.optimizers().items():
        sa, sb = opt.state_dict()['state'], b.optimizers()[name].state_dict()['state']
        for i in sa:
            for k in ('exp_avg', 'exp_avg_sq'):
                assert torch.equal(sa[i][k], sb[i][k]), f'optimizer {name}: {k} of parameter {i} differs after resume'
