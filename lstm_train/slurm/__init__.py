"""lstm_train on SLURM, split by where each part runs.

    lstm-train submit jobs/mnist_lstm.yaml slurm.nodes=2 --wait
    lstm-train status runs/mnist_lstm/<run id>          # or a sweep directory
    lstm-train cancel runs/mnist_lstm/<run id>

Compute node
    node.py        the `Trainer` every SLURM task runs (requeue-safe), the
                   torch.distributed environment from submitit's job environment
Login node
    preflight.py   the job against the cluster: partition, nodes, CPUs, time limit
    submission.py  `submit`: run ids, submitit's executor, one run or a sweep (job array)
    jobstate.py    job states and requeue history from sacct / squeue
    diagnose.py    why a job ended: the rank that died and where, the exception, the log
    status.py      `status`, `cancel`, and waiting for `submit --wait`
    commands.py    running SLURM's client commands, with one clear error

`node` imports nothing of the login-node modules; `status`, `cancel` and the
state queries import no torch.

Files
    run dir:   config.yaml, checkpoints/, metrics/, result.json (from `train`),
               submission.json (job ids, executor, log paths, W&B group),
               slurm/ (submitit's folder: <job id>_<task>_log.out/.err, pickles)
    sweep dir: runs/<job>/sweep-<hash>/ with submission.json, slurm/ and one run
               dir per grid point (`00-lr=0.01,hidden_size=64`, ...).

When a rank or a node dies: which mechanism does what
    srun --kill-on-bad-exit=1 (set by `submit`, and in slurm/accelerate.sbatch)
        The moment one task exits non-zero or is killed, srun kills the step's
        other tasks and the job ends FAILED; srun logs `srun: error: <host>: task
        <rank>: Killed` in the batch log, which `status` reports as the rank and
        host that died first.  Without it, the survivors would sit in their next
        collective: over gloo a dead peer's closed socket happens to fail them
        within a second, but NCCL (or a peer that hangs rather than dies) waits
        for the collective timeout.
    torch elastic agent (`accelerate launch` / torchrun, one per node under the
        sbatch template)
        Watches its local workers; when one dies it stops the others on its node,
        prints which rank failed on which host (exit code or signal) and exits
        non-zero, which srun's kill-on-bad-exit turns into the end of the job on
        every node.  No restarts (max_restarts=0): a resume is SLURM's business.
    SLURM requeue
        A node that fails (or is set DOWN) under a running job makes the job
        NODE_FAIL and, with JobRequeue=1 (the default) or --requeue, puts it back
        in the queue with the same job id; it starts again when nodes are free and
        `train` resumes from the newest checkpoint in the run directory.  The time
        limit and preemption go through submitit's signal handler instead
        (USR2 -> checkpoint -> `scontrol requeue`).  `status` lists each earlier
        incarnation (sacct --duplicates).
    collective timeout (torch.distributed, `distributed.make_accelerator`)
        The last resort for a rank that neither dies nor answers (a hung peer, a
        host that vanished without closing its sockets): every collective fails
        after LSTM_TRAIN_COLLECTIVE_TIMEOUT_S (default 600 s: it has to outlast the
        longest legitimate wait, rank 0 writing the final result while the others
        wait at the last barrier); the failing rank exits and srun ends the rest.
"""
