"""The RNNModel classifier of the tutorials (``nn.RNN``, its last step, a linear head,
cross-entropy) with ``nn.RNN`` swapped for ``recurrent.torch.RNN``: the same loss curve,
faster on CPU. The tutorial's sizes (10 inputs, 20 hidden units, 2 layers, 5 classes,
10 steps); task: which pair of channels has the largest total.

    python python/examples/classifier.py [--epochs 100]
"""

import argparse
import time

import torch
import torch.nn as nn

import recurrent.torch as rt


class RNNModel(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers, num_classes, rnn=nn.RNN):
        super().__init__()
        self.rnn = rnn(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        h0 = torch.zeros(self.rnn.num_layers, x.size(0), self.rnn.hidden_size).to(x.device)
        out, _ = self.rnn(x, h0)
        out = out[:, -1, :]
        return self.fc(out)


def data(n=512, steps=10, features=10, classes=5):
    """Sequences of `features` noisy channels; the label is the pair of channels with the
    largest total over time."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, steps, features, generator=g)
    labels = x.sum(1).view(n, classes, features // classes).sum(2).argmax(1)
    return x, labels


def train(rnn, epochs):
    x, y = data()
    torch.manual_seed(0)
    model = RNNModel(10, 20, 2, 5, rnn=rnn)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    curve, start = [], time.perf_counter()
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        curve.append(loss.item())
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    return curve, accuracy, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=100)
    a = ap.parse_args()
    ref, ref_acc, ref_s = train(nn.RNN, a.epochs)
    ours, ours_acc, ours_s = train(rt.RNN, a.epochs)
    for epoch in range(0, a.epochs, max(1, a.epochs // 10)):
        print(f"Epoch [{epoch + 1}/{a.epochs}], Loss: nn.RNN {ref[epoch]:.6f}  recurrent.torch.RNN {ours[epoch]:.6f}")
    gap = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(ref, ours))
    print(f"final loss: nn.RNN {ref[-1]:.6f}, recurrent.torch.RNN {ours[-1]:.6f} (largest relative gap {gap:.1e})")
    print(f"training accuracy: nn.RNN {ref_acc:.3f}, recurrent.torch.RNN {ours_acc:.3f}")
    print(f"time: nn.RNN {ref_s:.2f} s, recurrent.torch.RNN {ours_s:.2f} s ({ref_s / ours_s:.2f}x)")


if __name__ == "__main__":
    main()
