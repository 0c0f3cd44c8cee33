"""Quick sweep: an ODE transformer under 2 solvers x 2 step counts, and a discrete baseline.

    python -m experiments.run --config configs/quick.py --workers 2

Associative recall (4 key-value pairs, vocabulary 8), width 32, 300 AdamW steps per run.
The discrete family ignores the solver keys, so the grid's discrete points collapse
into one run: 5 runs in all. ``--workers 2`` trains two at a time (the runs are tiny, so
one compiles while the other trains); the results are the same with one worker.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "quick"
    c.experiment = "train"
    c.seed = 0
    c.task = ml_collections.ConfigDict(dict(
        name="associative_recall", seed=0, vocab_size=8, seq_len=9, num_train=4096, num_test=512))
    c.model = ml_collections.ConfigDict(dict(
        family="ode", width=32, heads=4, mlp_ratio=2, time="tied", pieces=4, basis=4, layers=4,
        readout="last", param_budget=0, embedding="table", embed_dim=0, compression=8))
    c.solver = ml_collections.ConfigDict(dict(
        name="rk4", steps=4, adaptive=False, rtol=1e-3, atol=1e-6, t1=1.0, adjoint="checkpoint",
        max_steps=4096))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=300, batch_size=64, learning_rate=1e-2, weight_decay=1e-2, warmup_steps=30,
        grad_clip=1.0, log_every=50, eval_batch_size=512, checkpoint_every=0, microbatch=0,
        kinetic=0.0, jacobian=0.0))
    c.mesh = ml_collections.ConfigDict(dict(data=1, model=1))
    # After training (odeformer.experiment.evaluators.invariance, odeformer.experiment.evaluators.stability): test accuracy under other
    # solvers ('name:steps' or 'name:rtol'; the last is the reference of invariance_gap),
    # and stability metrics on the first `examples` test examples.
    c.evaluate = ml_collections.ConfigDict(dict(
        solvers=(), stability=False, epsilon=1e-2, power_iterations=20, examples=64))
    c.sweep = ml_collections.ConfigDict(dict(
        model=dict(family=("ode", "discrete")),
        solver=dict(name=("euler", "rk4"), steps=(2, 4))))
    c.sweep_zip = ()
    c.lock()
    return c
