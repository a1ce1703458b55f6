"""One module per `reface` subcommand: `add_arguments(parser)` and `main(args) -> int`."""
