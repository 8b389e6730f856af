"""The tables of docs/inference.md and the README's benchmark section from the files scripts/inference.sh writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> None:
    bench = json.loads((out / "bench.json").read_text())["run"]
    export = json.loads((out / "export.json").read_text())
    decoding = json.loads((out / "decoding.json").read_text())
    lat, share = bench["latency_s"], bench["latency_share"]
    print(f"`deftrec bench {bench['run']}`: {bench['users']} cold users one at a time, K = {bench['k']}, "
          f"{bench['device']}, {bench['torch_threads']} threads, {bench['decoding']} decoding, {bench['precision']}, "
          f"{lat['forwards']} LLM passes per user\n")
    print("| stage | ms / user | share |")
    print("|---|---|---|")
    for name in ("prefill", "generation", "denoising", "retrieval"):
        label = {"prefill": "LLM prefill", "generation": "LLM generation", "denoising": "denoising (100 steps)"}
        print(f"| {label.get(name, name)} | {1000 * lat[name]:.1f} | {100 * share[name]:.1f} % |")
    print(f"| **total, one cold user** | **{1000 * lat['total']:.1f}** | 100 % |\n")
    if "full_decoding" in bench:
        full = bench["full_decoding"]
        print(f"- Full greedy decoding ({bench['precision']}) on the same users, interleaved: {1000 * full['latency_s']['total']:.1f} "
              f"ms / user ({full['latency_s']['forwards']} LLM passes): **{full['speedup']:.2f}×** slower; "
              f"identical top-{bench['k']} lists for {full['same_lists']} of {bench['users']} users.")
    if "baseline" in bench:
        base = bench["baseline"]
        print(f"- Beam-search baseline ({bench['precision']}): {1000 * base['seconds_per_user']:.0f} ms / user: DeftRec is "
              f"**{bench['speedup']:.1f}× faster** (same users, same LLM, one run).")
    tput = ", ".join(f"{r['users_per_s']:.2f} users/s at batch {r['batch_size']}" for r in bench["throughput"])
    print(f"- Throughput: {tput}.")
    print(f"- All {export['users']} users exported with K = 20, nothing cached (`deftrec export --recompute`): "
          f"**{export['seconds']:.0f} s** including the model load; {export['same_lists']} of {export['users']} lists "
          f"identical to the ones cached at training.\n")
    modes = [m for m in decoding if "/" in m]
    print(f"Every user of the run described under each decoding ({decoding['threads']} threads, batches of 32 sorted "
          f"by prompt length, or of the size after @; first row = reference):\n")
    print("| decoding / precision | s | users/s | same text as first | followed a template | max abs Δc (followed) "
          "| valid HR@10 | test HR@10 | test NDCG@10 | distinct texts |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in modes:
        r = decoding[m]
        followed = "—" if r["followed"] is None else r["followed"]
        print(f"| {m} | {r['seconds']:.0f} | {r['users_per_s']:.2f} | {r['same_text']} | {followed} | "
              f"{r['max_abs_dc_followed']:.1e} | {r['valid_HR@10']:.4f} | {r['test_HR@10']:.4f} | "
              f"{r['test_NDCG@10']:.4f} | {r['distinct_texts']} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
