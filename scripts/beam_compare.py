"""Greedy vs beam search on one trained translation run: sacreBLEU and sentences/s.

usage: .venv/bin/python scripts/beam_compare.py RUN_DIR SOURCE_FILE REFERENCE_FILE [THREADS] [BEAMS]
"""
import sys
import time
from pathlib import Path

import torch
from sacrebleu.metrics import BLEU, CHRF

from lstm_train.cli import load_run

run, src, ref = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
beams = [int(b) for b in (sys.argv[5] if len(sys.argv) > 5 else "1,5").split(",")]
job, task, model, info = load_run(run)
task.vocabularies_for(info)
sources = [line.rstrip("\n") for line in open(src, encoding="utf-8")]
refs = [line.rstrip("\n") for line in open(ref, encoding="utf-8")]
for beam in beams:
    began = time.perf_counter()
    hyp = task.translate(model, sources, beam_size=beam, batch_size=job.data.eval_batch_size)
    seconds = time.perf_counter() - began
    print(f"beam {beam}: BLEU {BLEU().corpus_score(hyp, [refs]).score:.2f}  "
          f"lc BLEU {BLEU(lowercase=True).corpus_score(hyp, [refs]).score:.2f}  "
          f"chrF {CHRF().corpus_score(hyp, [refs]).score:.2f}  {len(sources) / seconds:.1f} sentences/s "
          f"({len(sources)} in {seconds:.1f} s, {torch.get_num_threads()} threads, length_penalty "
          f"{job.model.length_penalty})", flush=True)
