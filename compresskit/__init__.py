"""compresskit: can a small student do the teacher's job, and what does it buy on the target hardware?

The package root is the shared core (``pipeline``, ``run``, ``bench``, ``training``, ``models``, ``reporting``,
``onnx``, ``cli``); each task family is a package under ``tasks/`` behind the ``tasks.protocol.Task`` protocol:
``tasks/classification/`` (encoder classifiers) and ``tasks/causal_lm/`` (decoder LLMs). Stages talk through
artifacts on disk; ``cli`` wires them into subcommands.
"""

__version__ = "0.1.0"
