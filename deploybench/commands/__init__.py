"""The command line: ``deploybench COMMAND`` (``deploybench.commands.cli``), one module per command. Each
holds the
command's arguments (``add_arguments(parser)``) and ``run(args) -> int``, which calls the library."""
