"""`python tests/kill_in_save.py POINT STEP -- agrl train args...`: `agrl train`, SIGKILLed inside the save
of checkpoint-STEP at POINT (tests/test_stages.py):

    weights    the weights file half-written
    optimizer  the optimizer half-written (weights whole)
    state      just after trainer_state.json is written (what used to mark a checkpoint complete), before
               the Trainer returns from the save
"""

import os
import signal
import sys

import torch
import transformers.modeling_utils as hf_models
import transformers.trainer as hf_trainer

from agrl.cli import app

point, step = sys.argv[1], int(sys.argv[2])
target = f"checkpoint-{step}"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def half_then_die(path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)
    die()


if point == "weights":
    save_file = hf_models.safe_save_file  # save_pretrained's writer of model.safetensors

    def save_weights(tensors, filename, *args, **kwargs):
        save_file(tensors, filename, *args, **kwargs)
        if target in str(filename):
            half_then_die(filename)

    hf_models.safe_save_file = save_weights
elif point == "optimizer":
    save = torch.save

    def save_object(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)) and target in str(f) and str(f).endswith("optimizer.pt"):
            half_then_die(f)

    torch.save = save_object
elif point == "state":
    to_json = hf_trainer.TrainerState.save_to_json

    def save_state(self, json_path):
        to_json(self, json_path)
        if target in str(json_path):
            die()

    hf_trainer.TrainerState.save_to_json = save_state
else:
    raise SystemExit(f"unknown point {point!r}")

sys.argv = ["agrl", *sys.argv[sys.argv.index("--") + 1 :]]
app()
