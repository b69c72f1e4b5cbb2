"""One module per command, each offering ``add_parser(commands)`` and either ``run(args,
model)`` or ``main(args)`` (see :mod:`weightscope.cli.options`)."""
