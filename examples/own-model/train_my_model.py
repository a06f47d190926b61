"""Train ``my_models.small_resnet`` on the offline mnist subset and save plain safetensors
weights, as a user's own training code would (the harness is used only for the data)."""

from __future__ import annotations

import sys

import torch
from my_models import small_resnet
from safetensors.torch import save_file

from robustness.data import load_dataset
from robustness.train import accuracy, train

torch.manual_seed(0)
data = load_dataset("mnist", seed=0)
model = small_resnet()
train(model, data.x_train, data.y_train, epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 3,
      seed=0, progress=False)
print(f"test accuracy {accuracy(model, data.x_test, data.y_test):.3f}")
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, "small_resnet.safetensors")
print("wrote small_resnet.safetensors")
