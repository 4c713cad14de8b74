"""What both trainers (train_vae.py, train_diffusion.py) use: EMA weights and the log file."""
import json

import torch

from checkpoint_dataset import atomic_write


class EMA:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model, decay):
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        # Warm-up: early on the average follows the model closely, or a short run would
        # keep (nearly) its random initialisation.
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        floats = [k for k, v in current.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.state[k] for k in floats], [current[k] for k in floats], 1 - decay)
        for k, v in current.items():
            if not v.is_floating_point():
                self.state[k].copy_(v)



def write_log(history, path):
    """The whole log, rewritten from the checkpointed history: a resumed run never repeats lines."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.writelines(json.dumps(h) + "\n" for h in history)
    atomic_write(path, write)
