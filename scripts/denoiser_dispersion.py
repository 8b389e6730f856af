"""How spread out a trained denoiser's middle-layer representations are, and where L_Disp sits against its floor.

Usage: .venv/bin/python scripts/denoiser_dispersion.py runs/ml-100k runs/ml-100k-contrec [--batch 64]
Draws `batch` (cached user condition, random item) pairs, noises them at several t, and prints the median and
minimum mean-squared distance between two examples' representations and L_Disp at the run's τ.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from data.catalog import Catalog
from engine.model.diffusion import dispersive_loss
from engine.services.loading import open_deftrec
from engine.services.run import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--untrained", action="store_true", help="also a freshly initialized denoiser of the first run")
    args = parser.parse_args()
    for index, path in enumerate(args.runs):
        run = Run.open(path)
        model = open_deftrec(run)
        with Catalog.open(run.catalog_path, readonly=True) as catalog:
            conditions = torch.as_tensor(np.stack([row[3] for row in catalog.preferences()]))  # [U, D]
        denoisers = [("trained", model.heads.denoiser.eval())]
        if args.untrained and index == 0:
            torch.manual_seed(0)
            denoisers.append(("untrained", type(model.heads.denoiser)(model.heads.denoiser.config).eval()))
        schedule, tau = model.heads.schedule(), model.config.diffusion.dispersive_tau
        for label, denoiser in denoisers:
            generator = torch.Generator().manual_seed(0)
            users = torch.randint(0, len(conditions), (args.batch,), generator=generator)
            items = torch.randint(0, len(model.item_q), (args.batch,), generator=generator)
            x0 = model.item_q[items] / model.config.diffusion.target_scale  # [B, d]
            for t in (0, 250, 500, 999):
                steps = torch.full((args.batch,), t)
                noise = torch.randn(x0.shape, generator=generator)  # [B, d]
                with torch.no_grad():
                    _, hidden = denoiser(schedule.add_noise(x0, noise, steps), steps, conditions[users], None,
                                         return_hidden=True)  # [B, H]
                distances = (hidden[:, None] - hidden[None]).pow(2).mean(-1)  # [B, B]
                off_diagonal = distances[~torch.eye(args.batch, dtype=torch.bool)]
                print(f"{path} {label} t={t} H={hidden.shape[1]} median {off_diagonal.median():.3f} "
                      f"min {off_diagonal.min():.3f} L_disp(τ={tau:g}) {dispersive_loss(hidden, tau):.3f} "
                      f"floor {-math.log(args.batch):.3f}")


if __name__ == "__main__":
    main()
