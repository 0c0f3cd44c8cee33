"""Samples text from a finished language-model run of a sweep.

    python -m experiments.sample --workdir runs/lm_quick --run_id RUN_ID [--prompt "ROMEO:"]
        [--length 300] [--temperature 0.8] [--top_k 40] [--seed 0]

Without ``--run_id`` it lists the workdir's language-model runs. The same key (``--seed``)
gives the same text (``odeformer.language.sampling.generate``).
"""

import sys

import jax
from absl import app, flags, logging

from odeformer.experiment import results
from odeformer.experiment.language import PARAMS_DIR, load_trained
from odeformer.language.sampling import generate

_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's workdir (runs/<config name>).")
_RUN_ID = flags.DEFINE_string("run_id", None, "The run to sample from; none: list the runs.")
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text the sample continues (characters of the vocabulary).")
_LENGTH = flags.DEFINE_integer("length", 300, "Characters to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 = the most likely character.")
_TOP_K = flags.DEFINE_integer("top_k", None, "Draw among the k most likely characters only.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed of the sample.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep JAX's and orbax's info lines off the sample
    if _RUN_ID.value is None:
        table = results.load(_WORKDIR.value)
        runs = table[table.get("val_loss").notna()] if "val_loss" in table else table.iloc[:0]
        for run_dir in sorted(results.run_dir(_WORKDIR.value, r) for r in runs["run_id"]):
            if (run_dir / PARAMS_DIR).exists():
                row = runs[runs["run_id"] == run_dir.name].iloc[0]
                print(f"{run_dir.name}  {row['shape.family']:<10} val_loss {row['val_loss']:.4f}")
        return 0
    try:
        model, vocabulary, values = load_trained(_WORKDIR.value, _RUN_ID.value)
        prompt = vocabulary.encode(_PROMPT.value)
        ids = generate(model, prompt, jax.random.key(_SEED.value), length=_LENGTH.value,
                       temperature=_TEMPERATURE.value, top_k=_TOP_K.value, **values)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(vocabulary.decode(ids))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
