"""compresskit: can a small student do the teacher's job, and what does it buy on the target hardware?

Stages (one module each, talking through artifacts on disk): ``data`` → ``finetune`` (teacher) → ``distill`` →
``export`` → ``quantize`` → ``bench`` → ``report`` (+ ``gates``). ``cli`` wires them into subcommands.
"""

__version__ = "0.1.0"
