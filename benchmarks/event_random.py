"""Cost of the per-event random streams (robustcheck.event_random) against ``torch.rand``.

For the shapes attacks draw (a flat tagger's batch, a padded particle batch, one integer
column of a particle batch as the stochastic rounding draws it), the time per draw of
``EventRandom.uniform`` and of ``torch.rand`` of the same size, and their ratio, measured in the
same process one after the other (so the ratio holds on a loaded machine).

    python benchmarks/event_random.py --threads 1 [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from robustcheck.event_random import EventRandom

SHAPES = {
    "flat batch (4096 x 20)": ((4096, 20), None),
    "particle batch (256 x 128 x 4)": ((256, 128, 4), None),
    "one integer column (256 x 128 x [1])": ((256, 128, 4), [3]),
}


def per_draw(draw: object, device: torch.device, repeats: int) -> float:
    draw()  # type: ignore[operator]
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        draw()  # type: ignore[operator]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"| draw | numbers | EventRandom (ms) | torch.rand (ms) | ratio |  [{device}]")
    print("|---|---|---|---|---|")
    for label, (shape, columns) in SHAPES.items():
        streams = EventRandom.of(1, "pgd", torch.arange(shape[0], device=device))
        index = None if columns is None else torch.tensor(columns, device=device)
        size = list(shape) if columns is None else [*shape[:-1], len(columns)]

        def ours(
            streams: EventRandom = streams,
            index: torch.Tensor | None = index,
            shape: tuple[int, ...] = shape,
        ) -> None:
            streams.uniform(shape, columns=index)

        def theirs(size: list[int] = size) -> None:
            torch.rand(size, device=device)

        a, b = per_draw(ours, device, args.repeats), per_draw(theirs, device, args.repeats)
        numbers = 1
        for s in size:
            numbers *= s
        print(f"| {label} | {numbers:,} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.1f} |")


if __name__ == "__main__":
    main()
