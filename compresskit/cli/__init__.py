"""The command line: the app and its commands (``app``), the options every task family shares and how a command
takes them (``options``), how one option is declared (``flags``), and ``--config`` files (``config_file``).

``main`` is the ``compresskit`` entry point; it is imported from ``app`` only when called, so a family's options
module can import ``cli.flags`` without loading the app.
"""


def main() -> None:
    """Entry point of the ``compresskit`` command (see ``app.main``)."""
    from compresskit.cli.app import main as run

    run()
