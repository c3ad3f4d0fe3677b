"""The runner: run options and ``run_*`` (:mod:`.runner`), the resumable fit,
grids, studies, the recipes' glue, run directories, checkpoints, callbacks,
distribution strategy and precision."""

from kdzoo.train.runner import (FunMatchRun, RunOptions, Schedule, SupervisedRun, eval_batches,
                                eval_resize_small, eval_text, fit_resumable, fit_schedule,
                                labeled_stream, make_schedule, plan, run_funmatch, run_supervised,
                                seed_everything, set_precision, total_steps, train_examples,
                                upscale_small_images, write_teacher_cache)

__all__ = [
    "FunMatchRun",
    "RunOptions",
    "Schedule",
    "SupervisedRun",
    "eval_batches",
    "eval_resize_small",
    "eval_text",
    "fit_resumable",
    "fit_schedule",
    "labeled_stream",
    "make_schedule",
    "plan",
    "run_funmatch",
    "run_supervised",
    "seed_everything",
    "set_precision",
    "total_steps",
    "train_examples",
    "upscale_small_images",
    "write_teacher_cache",
]
