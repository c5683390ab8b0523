"""``python -m deploybench``: the command line, as the ``deploybench`` script."""

from deploybench.commands.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
