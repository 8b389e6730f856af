"""LLM passes per cold user under draft decoding: the first N users of a run described one at a time (the guesser
learning as it goes, the first user included), and the guesser's state at the end:
python scripts/measure/draft_passes.py RUN [N]."""
import collections
import sys
import time

from engine.services.bench import forward_timer
from engine.services.loading import open_deftrec
from engine.services.run import Run

model = open_deftrec(Run.open(sys.argv[1]))
n = int(sys.argv[2]) if len(sys.argv) > 2 else 48
counts: collections.Counter = collections.Counter()
started = time.perf_counter()
for user in range(n):
    with forward_timer(model.llm, model.device) as passes:
        model.describe([user], decoding="draft")
    counts[len(passes)] += 1
guesser = model._guesser
print(f"users by LLM passes: {dict(sorted(counts.items()))}; {(time.perf_counter() - started) / n:.3f} s per describe")
print(f"templates written {guesser.template_counts}; the history's own leading categories written for "
      f"{guesser.own_hits} of {guesser.total}")
