"""The LSTMModel regressor of the tutorials (an LSTM, its last step, a linear head, MSE
and Adam) with ``nn.LSTM`` swapped for ``recurrent.torch.LSTM``: the same loss curve,
faster on CPU. Task: predict the next value of noisy sine waves.

    python python/examples/regressor.py [--epochs 100]
"""

import argparse
import time

import torch
import torch.nn as nn
import torch.optim as optim

import recurrent.torch as rt


class LSTMModel(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers, output_size, lstm=nn.LSTM):
        super().__init__()
        self.lstm = lstm(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


def data(n=256, steps=50):
    g = torch.Generator().manual_seed(0)
    phase = torch.rand(n, 1, generator=g) * 6.28
    freq = 0.1 + 0.2 * torch.rand(n, 1, generator=g)
    t = torch.arange(steps + 1).float()
    wave = torch.sin(phase + freq * t) + 0.05 * torch.randn(n, steps + 1, generator=g)
    return wave[:, :steps, None], wave[:, steps:]


def train(lstm, epochs):
    inputs, targets = data()
    torch.manual_seed(0)
    model = LSTMModel(1, 64, 1, 1, lstm=lstm)
    loss_function = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    curve, start = [], time.perf_counter()
    for _ in range(epochs):
        outputs = model(inputs)
        optimizer.zero_grad()
        loss = loss_function(outputs, targets)
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    return curve, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=100)
    a = ap.parse_args()
    ref, ref_s = train(nn.LSTM, a.epochs)
    ours, ours_s = train(rt.LSTM, a.epochs)
    for epoch in range(0, a.epochs, max(1, a.epochs // 10)):
        print(f"Epoch [{epoch + 1}/{a.epochs}], Loss: nn.LSTM {ref[epoch]:.6f}  recurrent.torch.LSTM {ours[epoch]:.6f}")
    gap = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(ref, ours))
    print(f"final loss: nn.LSTM {ref[-1]:.6f}, recurrent.torch.LSTM {ours[-1]:.6f} (largest relative gap {gap:.1e})")
    print(f"time: nn.LSTM {ref_s:.2f} s, recurrent.torch.LSTM {ours_s:.2f} s ({ref_s / ours_s:.2f}x)")


if __name__ == "__main__":
    main()
