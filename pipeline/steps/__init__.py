"""The pipeline's steps: each module has `get_args_parser()` and `main(args)`; nothing runs at
import, and nothing else in the package imports this one."""

STEPS = ("prepare", "train", "tune", "evaluate", "compare", "main")
