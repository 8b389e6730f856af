"""Whether two trainings of the same command gave the same run: every weight file byte for byte, the cached texts and
conditions, the DeftRec top lists, and config.json apart from timings and paths: python scripts/measure/compare_runs.py A B."""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from data.catalog import Catalog

a, b = Path(sys.argv[1]), Path(sys.argv[2])
WEIGHTS = ["lightgcn.safetensors", "mf.safetensors", "tokenizer.safetensors", "denoiser.safetensors", "items.faiss",
           "lora/adapter_model.safetensors"]
VOLATILE = ("seconds", "created", "name", "path", "run", "timings", "started", "finished", "hostname")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "absent"


def largest_difference(x: Path, y: Path) -> str:
    """', max |Δ| …' over the tensors two safetensors files share (shape permitting), or '' for other files."""
    if x.suffix != ".safetensors" or not (x.exists() and y.exists()):
        return ""
    from safetensors.numpy import load_file
    tx, ty = load_file(str(x)), load_file(str(y))
    diffs = [float(np.abs(tx[k].astype(np.float64) - ty[k].astype(np.float64)).max())
             for k in tx.keys() & ty.keys() if tx[k].shape == ty[k].shape and tx[k].size]
    return f", max |Δ| {max(diffs):.1e}" if diffs else ""


for name in WEIGHTS:
    da, db = digest(a / name), digest(b / name)
    extra = largest_difference(a / name, b / name) if da != db else ""
    print(f"{name:34s} {'identical' if da == db else 'DIFFERENT'} ({da} / {db}{extra})")


def leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in VOLATILE:
                yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), node


ca, cb = (dict(leaves(json.loads((p / "config.json").read_text()))) for p in (a, b))
differ = sorted(k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k))
print(f"config.json: {len(ca)} settings and figures (timings and paths left out), {len(differ)} differ"
      + (": " + ", ".join(f"{k} {ca.get(k)!r} / {cb.get(k)!r}" for k in differ[:12]) if differ else ""))
with Catalog.open(a / "catalog.sqlite", readonly=True) as x, Catalog.open(b / "catalog.sqlite", readonly=True) as y:
    pa, pb = x.preferences(), y.preferences()
    n = x.n_users()
    texts = sum(ra[1] == rb[1] for ra, rb in zip(pa, pb))
    conds = max(float(np.abs(ra[3] - rb[3]).max()) for ra, rb in zip(pa, pb))
    la, lb = x.top_lists("deftrec", 20, n), y.top_lists("deftrec", 20, n)
    same_lists = int((la == lb).all(1).sum()) if la is not None and lb is not None else None
print(f"cached texts identical for {texts} of {n} users; max |Δc| {conds:.1e}; DeftRec top-20 lists identical for "
      f"{same_lists} of {n} users")
