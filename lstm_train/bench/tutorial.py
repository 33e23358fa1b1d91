"""The tutorial's MNIST script as published, timed: the baseline every user starts from.

torchvision's MNIST (or Fashion-MNIST) Dataset with ToTensor, DataLoader(batch_size=64,
shuffle=True), the tutorial's `simpleLSTM` (nn.LSTM fed explicit zero states + Linear on
the last step), Adam(lr=0.01), cross-entropy, `loss.item()` printed every 100 steps, then
the test set through DataLoader(batch_size=64, shuffle=False).  Only classify jobs have
it; the job's batch size, hidden size, layers, learning rate and sequence shape (28 rows,
or 784 pixels for `data.sequence: pixels`) are used, so on the tutorial's own job
(jobs/mnist_lstm.yaml) this is the script line for line.
"""

from __future__ import annotations

import time
from typing import Any

import torch

TUTORIAL = {"batch_size": 64, "time_step": 28, "input_size": 28, "hidden_size": 64, "num_layers": 1,
            "num_classes": 10, "lr": 0.01, "epochs": 1, "seed": 1}


def same_as_tutorial(job: Any) -> bool:
    """Is the job the tutorial's model and optimizer (so the comparison is like for like)?"""
    m, o = job.model, job.optim
    return (job.task == "classify" and job.data.batch_size == TUTORIAL["batch_size"]
            and m.hidden_size == TUTORIAL["hidden_size"] and m.num_layers == TUTORIAL["num_layers"]
            and not m.bidirectional and not m.dropout and o.name == "adam" and o.lr == TUTORIAL["lr"]
            and o.scheduler == "none" and not o.weight_decay and not o.grad_clip and o.warmup_steps == 0
            and job.data.sequence == "rows")


def tutorial_epoch(job: Any, device: torch.device, max_steps: int | None = None, log=print) -> dict[str, Any]:
    """The tutorial's script, one epoch on the job's shapes: training loop and test pass timed apart."""
    from torch import nn

    pixels = job.data.sequence == "pixels"
    time_step, input_size = (784, 1) if pixels else (28, 28)
    batch_size, hidden_size, num_layers = job.data.batch_size, job.model.hidden_size, job.model.num_layers
    num_classes, epochs = TUTORIAL["num_classes"], TUTORIAL["epochs"]
    torch.manual_seed(job.train.seed)
    train_loader, test_loader = tutorial_loaders(job, batch_size)

    class simpleLSTM(nn.Module):  # noqa: N801 - the tutorial's name
        def __init__(self, input_size, hidden_size, num_layers, num_classes):
            super().__init__()
            self.hidden_size = hidden_size
            self.num_layers = num_layers
            self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
            self.fc = nn.Linear(hidden_size, num_classes)

        def forward(self, x):
            h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)
            c0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)
            out, (h_n, h_c) = self.lstm(x, (h0, c0))
            return self.fc(out[:, -1, :])

    model = simpleLSTM(input_size, hidden_size, num_layers, num_classes).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), job.optim.lr)
    shape = (time_step, input_size)
    timed = tutorial_train(model, criterion, optimizer, train_loader, shape, device, epochs, max_steps, log)
    start = time.perf_counter()
    accuracy = tutorial_test(model, test_loader, shape, device)
    return {**timed, "eval_s": time.perf_counter() - start, "metric": accuracy}


def tutorial_loaders(job: Any, batch_size: int) -> tuple[Any, Any]:
    """The tutorial's torchvision datasets (ToTensor) and DataLoaders: training shuffled, test in order."""
    import torchvision.datasets as dsets
    import torchvision.transforms as transforms
    from torch.utils.data import DataLoader

    from ..data.mnist import FOLDERS

    cls = getattr(dsets, FOLDERS[job.data.dataset])
    train_data = cls(root=job.data.root, train=True, transform=transforms.ToTensor(), download=False)
    test_data = cls(root=job.data.root, train=False, transform=transforms.ToTensor())
    train_loader = DataLoader(dataset=train_data, batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(dataset=test_data, batch_size=batch_size, shuffle=False)
    return train_loader, test_loader


def tutorial_train(model: Any, criterion: Any, optimizer: Any, train_loader: Any, shape: tuple[int, int],
                   device: torch.device, epochs: int, max_steps: int | None, log: Any) -> dict[str, Any]:
    """The tutorial's training loop as published (`loss.item()` printed every 100 steps), timed:
    steps, samples, wall and CPU seconds."""
    time_step, input_size = shape
    total_step = len(train_loader)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    steps = samples = 0
    for epoch in range(epochs):
        for i, (images, labels) in enumerate(train_loader):
            images = images.reshape(-1, time_step, input_size).to(device)
            labels = labels.to(device)
            outputs = model(images)
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            samples += len(labels)
            if i % 100 == 0:
                log("Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}".format(epoch + 1, epochs, i + 1, total_step,
                                                                       loss.item()))
            if max_steps and steps >= max_steps:
                break
    sync()
    epoch_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    return {"steps": steps, "samples": samples, "units": samples, "epoch_s": epoch_s, "cpu_s": cpu_s}


def tutorial_test(model: Any, test_loader: Any, shape: tuple[int, int], device: torch.device) -> float:
    """The tutorial's test pass: accuracy over the test set."""
    time_step, input_size = shape
    model.eval()
    with torch.no_grad():
        correct = 0
        total = 0
        for images, labels in test_loader:
            images = images.reshape(-1, time_step, input_size).to(device)
            labels = labels.to(device)
            outputs = model(images)
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return correct / total
