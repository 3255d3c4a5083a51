"""The command-line tools behind ``python -m gonka_pool``: the demo and the
benchmarks, one module per subcommand.  Not part of the library: nothing under
``gonka_pool`` outside this package imports it.

A subcommand's module offers ``HELP`` (its line in ``--help``),
``PARSER_OPTIONS`` (its parser's keywords: description, formatter),
``configure(parser)`` (adds its options, returns the parser) and
``execute(parser, args)`` (runs it, returns the exit status); ``__main__``
lists the modules in ``COMMANDS``.
"""
