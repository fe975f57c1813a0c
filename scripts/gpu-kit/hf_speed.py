"""The GPU run kit's peer: Hugging Face Trainer (bf16=True on CUDA) training a
random-weight model of an xlm-roberta shape on the shapes our `absa-gpu-bench` uses:
batch 16 of fixed length 100, or of laptops lengths padded per batch (length-grouped).
Prints one JSON line: samples/s over the timed steps, peak GPU memory, MFU by the same
FLOP count as ours (6 per matrix parameter per token + the attention's 12·L·s·h).

Runs with the python of the GPU machine (torch, transformers); `--device cpu --shape
tiny` checks it anywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, XLMRobertaConfig, XLMRobertaForSequenceClassification

SHAPES = {  # hidden, layers, heads, intermediate (Hugging Face's configs)
    "tiny": (64, 2, 4, 128),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
}
PEAK_TFLOPS = [("H200", 989.4), ("H100 PCIE", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]


def flops_per_token(hidden: int, layers: int, intermediate: int, seq_len: float) -> float:
    matrix = layers * (4 * hidden * hidden + 2 * hidden * intermediate) + hidden * hidden
    return 3.0 * (2.0 * matrix + 4.0 * layers * seq_len * hidden)


class Rows(torch.utils.data.Dataset):
    def __init__(self, lengths: list[int], vocab: int, seed: int):
        rng = random.Random(seed)
        self.rows = [[0] + [rng.randrange(5, vocab) for _ in range(n - 2)] + [2] for n in lengths]
        self.labels = [rng.randrange(3) for _ in lengths]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.labels[i]}


def collate(batch):
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), 1, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
        mask[i, : len(b["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([b["labels"] for b in batch])}


class Timer(TrainerCallback):
    """Wall time and tokens of the steps after `warmup`."""

    def __init__(self, warmup: int, cuda: bool):
        self.warmup, self.cuda = warmup, cuda
        self.start = None
        self.end = None

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.warmup and self.start is None:
            if self.cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.cuda:
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="base", choices=list(SHAPES))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--lengths", help="token lengths, one per line: padded per batch, length-grouped (else every row --seq-len)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    args = p.parse_args()
    hidden, layers, heads, intermediate = SHAPES[args.shape]
    cuda = args.device == "cuda"
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=intermediate, max_position_embeddings=514, type_vocab_size=1, num_labels=3)
    model = XLMRobertaForSequenceClassification(config)
    total = args.batch * (args.steps + args.warmup_steps)
    if args.lengths:
        pool = [min(int(x), 512) for x in open(args.lengths) if x.strip()]
        lengths = [pool[i % len(pool)] for i in range(total)]
    else:
        lengths = [args.seq_len] * total
    data = Rows(lengths, config.vocab_size, 0)
    timer = Timer(args.warmup_steps, cuda)
    with tempfile.TemporaryDirectory() as out:
        common = dict(
            output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps + args.warmup_steps, learning_rate=1e-5,
            weight_decay=0.01, bf16=cuda, use_cpu=not cuda, logging_strategy="no", save_strategy="no", report_to="none",
            disable_tqdm=True, dataloader_num_workers=0,
        )
        try:  # transformers' newer name for length-grouped batches, then the older one
            targs = TrainingArguments(**common, train_sampling_strategy="group_by_length" if args.lengths else "random")
        except TypeError:
            targs = TrainingArguments(**common, group_by_length=bool(args.lengths))
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate, callbacks=[timer])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    seconds = timer.end - timer.start
    sps = args.batch * args.steps / seconds
    mean_len = sum(lengths) / len(lengths)
    achieved = flops_per_token(hidden, layers, intermediate, mean_len) * mean_len * sps / 1e12
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = next((t for key, t in PEAK_TFLOPS if key in name.upper()), None) if cuda else None
    print(json.dumps({
        "peer": "hf_trainer", "shape": args.shape, "device": name, "bf16": cuda, "batch": args.batch,
        "padding": "dynamic" if args.lengths else "fixed", "seq_len": args.seq_len if not args.lengths else None,
        "steps": args.steps, "samples_per_second": sps, "achieved_tflops": achieved, "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "peak_memory_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
    }))


if __name__ == "__main__":
    main()
