"""Make the quickstart's data and tagger: a small MLP separating two kinds of jets.

Run from this folder: python make_example.py (writes data.npz, tagger.onnx, tagger.pt2).
The files it writes are committed, so the example runs without this step.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch

FEATURES = ["jet_pt", "jet_mass", "jet_width", "n_const"]


def make_jets(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Toy quark (0) and gluon (1) jets: gluon jets are wider, heavier and have more particles."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    pt = rng.uniform(500.0, 550.0, n)
    mass = rng.gamma(5.0 + 3.0 * label, 9.0)
    width = rng.beta(2.0 + 1.5 * label, 20.0)
    n_const = rng.poisson(25 + 15 * label)
    x = np.stack([pt, mass, width, n_const], axis=1).astype(np.float32)
    return x, label


def train(x: np.ndarray, y: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    mean, std = torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0))
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 2),
    )
    inputs, labels = (torch.from_numpy(x) - mean) / std, torch.from_numpy(y)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), labels).backward()
        optimizer.step()
    with torch.no_grad():  # fold the standardisation into the first layer
        net[0].bias -= net[0].weight @ (mean / std)
        net[0].weight /= std
    return net.eval()


def main() -> None:
    x_train, y_train = make_jets(20000, seed=1)
    x_test, y_test = make_jets(4000, seed=2)
    net = train(x_train, y_train)
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"test accuracy {accuracy:.3f}")
    np.savez("data.npz", jets=x_test, label=y_test)
    example = torch.from_numpy(x_test[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch")
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, "tagger.pt2")  # torch.export: TorchScript is deprecated
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                net,
                (example,),
                "tagger.onnx",
                input_names=["jets"],
                output_names=["logits"],
                dynamic_axes={"jets": {0: "batch"}},
                dynamo=False,
            )


if __name__ == "__main__":
    main()
